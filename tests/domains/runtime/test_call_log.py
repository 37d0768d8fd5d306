"""The datasite's call ledger keeps encrypted results exactly, in the current and the older form."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from domains.runtime.call_log import CallLog
from domains.runtime.errors import (
    CallLogCorrupt,
    CallNotRepeatable,
    CallOutOfOrder,
    ExecutionLimitReached,
    PrivateComputationFailed,
    TrainingError,
)
from privacy.he import EncryptedVector, init_keys, load_context


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory: pytest.TempPathFactory) -> EncryptedVector:
    secret, _public, _key_id = init_keys(tmp_path_factory.mktemp("ledger-keys"))
    return load_context(secret).encrypt_weighted(np.linspace(-1, 1, 5000), weight=0.5, bound=1.0)


def test_encrypted_result_replays_byte_identical(tmp_path: Path, encrypted: EncryptedVector) -> None:
    log = CallLog(tmp_path, "job", max_calls=2)
    computed = []

    def compute() -> dict:
        computed.append(1)
        return {"task": "train", "n_train": 10, "weights": encrypted.to_dict()}

    first = log.run(1, compute)
    again = log.run(1, compute)
    assert computed == [1] and first["replayed"] is False and again["replayed"] is True
    assert EncryptedVector.from_dict(again["weights"]) == encrypted
    assert again["weights"]["chunks"].dtype == np.uint8  # replays travel in the packed form too
    with pytest.raises(ExecutionLimitReached):
        log.run(3, compute)


def test_result_stored_by_an_older_version_still_replays(tmp_path: Path, encrypted: EncryptedVector) -> None:
    """Before the packed wire form, each ciphertext chunk was its own array ``c::i``."""
    log = CallLog(tmp_path, "job", max_calls=1)
    meta = {"task": "train", "encrypted": {"format": "medsyft-he-vector/1", "key_id": encrypted.key_id,
                                           "length": encrypted.length, "scale": encrypted.scale,
                                           "bound": encrypted.bound, "weight_sum": encrypted.weight_sum,
                                           "n_parts": encrypted.n_parts}}
    chunks = {f"c::{i}": np.frombuffer(c, np.uint8) for i, c in enumerate(encrypted.chunks)}
    np.savez(log.dir / "call-1.npz", __meta__=np.array(json.dumps(meta)), **chunks)
    replayed = log.run(1, lambda: pytest.fail("a stored call must not run again"))
    assert EncryptedVector.from_dict(replayed["weights"]) == encrypted


# -- order, attempts and failures ---------------------------------------------------------
def _ok(call: int) -> dict:
    return {"task": "train", "n_train": 1, "weights": None, "call": call}


def test_calls_run_in_order_unless_earlier_ones_are_given_up(tmp_path: Path) -> None:
    log = CallLog(tmp_path, "job", max_calls=4)
    with pytest.raises(CallOutOfOrder, match="needs call 2"):
        log.run(3, lambda: pytest.fail("call 3 must wait for calls 1 and 2"))
    log.run(1, lambda: _ok(1))
    log.run(3, lambda: _ok(3), skipped=[2])  # the orchestrator gave call 2 up for this site
    with pytest.raises(CallNotRepeatable, match=r"call 2 .* was skipped"):
        log.run(2, lambda: pytest.fail("a skipped call never runs later"))
    assert log.states() == {1: "done", 2: "skipped", 3: "done"}


def test_a_failed_call_is_recorded_and_never_retried(tmp_path: Path) -> None:
    log = CallLog(tmp_path, "job", max_calls=3)

    def fails() -> dict:
        raise PrivateComputationFailed("call 1 failed while computing on private data")

    with pytest.raises(PrivateComputationFailed):
        log.run(1, fails)
    with pytest.raises(CallNotRepeatable, match="already failed"):
        log.run(1, lambda: pytest.fail("a failed call must not train again"))
    assert [(e["call"], e["state"]) for e in log.entries()] == [(1, "started"), (1, "failed")]
    log.run(2, lambda: _ok(2))  # the job goes on: the failed call counts as resolved


def test_a_refusal_before_private_data_may_be_tried_again(tmp_path: Path) -> None:
    log = CallLog(tmp_path, "job", max_calls=2)

    def refused() -> dict:
        raise TrainingError("this datasite holds another HE key")

    with pytest.raises(TrainingError):
        log.run(1, refused)
    assert log.run(1, lambda: _ok(1))["replayed"] is False
    assert [e["state"] for e in log.entries()] == ["started", "refused", "started", "done"]


def test_a_call_interrupted_by_a_crash_is_not_run_again(tmp_path: Path) -> None:
    """A datasite killed during a call leaves only its 'started' line: it may have read data."""
    log = CallLog(tmp_path, "job", max_calls=2)
    log._append({"call": 1, "state": "started"})
    with pytest.raises(CallNotRepeatable, match="was interrupted"):
        log.run(1, lambda: pytest.fail("an interrupted call must not train again"))
    assert log.run(2, lambda: _ok(2))["replayed"] is False


def test_a_damaged_ledger_is_named_never_reset(tmp_path: Path) -> None:
    log = CallLog(tmp_path, "job", max_calls=2)
    log.run(1, lambda: _ok(1))
    with log.path.open("a") as fh:
        fh.write('{"call": 2, "sta')  # a truncated line
    before = log.path.read_bytes()
    with pytest.raises(CallLogCorrupt, match=r"ledger.jsonl line 3 is damaged"):
        log.run(2, lambda: pytest.fail("nothing runs on a damaged ledger"))
    assert log.path.read_bytes() == before


def test_older_ledger_lines_without_a_state_read_as_done(tmp_path: Path) -> None:
    log = CallLog(tmp_path, "job", max_calls=2)
    old = {"call": 1, "time": "2026-11-01T00:00:00+00:00", "task": "train"}
    log.path.write_text(json.dumps(old) + "\n")
    assert log.states() == {1: "done"}
    log.run(2, lambda: _ok(2))


def test_a_damaged_stored_result_is_named_never_replayed_or_reset(tmp_path: Path) -> None:
    log = CallLog(tmp_path, "job", max_calls=2)
    log.run(1, lambda: {**_ok(1), "share": np.arange(3)})
    stored = log.dir / "call-1.npz"
    cut = stored.read_bytes()[:-40]  # a write cut short
    stored.write_bytes(cut)
    with pytest.raises(CallLogCorrupt, match=r"call-1.npz is damaged .*restore it from a backup"):
        log.run(1, lambda: pytest.fail("a stored call must not run again"))
    assert stored.read_bytes() == cut
