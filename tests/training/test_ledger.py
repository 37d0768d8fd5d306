"""The datasite's call ledger keeps encrypted results exactly, in the current and the older form."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from domains.training.errors import ExecutionLimitReached
from domains.training.ledger import JobLedger
from privacy.he import EncryptedVector, init_keys, load_context


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory: pytest.TempPathFactory) -> EncryptedVector:
    secret, _public, _key_id = init_keys(tmp_path_factory.mktemp("ledger-keys"))
    return load_context(secret).encrypt_weighted(np.linspace(-1, 1, 5000), weight=0.5, bound=1.0)


def test_encrypted_result_replays_byte_identical(tmp_path: Path, encrypted: EncryptedVector) -> None:
    ledger = JobLedger(tmp_path, "job", max_calls=2)
    computed = []

    def compute() -> dict:
        computed.append(1)
        return {"task": "train", "n_train": 10, "weights": encrypted.to_dict()}

    first = ledger.run(1, compute)
    again = ledger.run(1, compute)
    assert computed == [1] and first["replayed"] is False and again["replayed"] is True
    assert EncryptedVector.from_dict(again["weights"]) == encrypted
    assert again["weights"]["chunks"].dtype == np.uint8  # replays travel in the packed form too
    with pytest.raises(ExecutionLimitReached):
        ledger.run(3, compute)


def test_result_stored_by_an_older_version_still_replays(tmp_path: Path, encrypted: EncryptedVector) -> None:
    """Before the packed wire form, each ciphertext chunk was its own array ``c::i``."""
    ledger = JobLedger(tmp_path, "job", max_calls=1)
    meta = {"task": "train", "encrypted": {"format": "medsyft-he-vector/1", "key_id": encrypted.key_id,
                                           "length": encrypted.length, "scale": encrypted.scale,
                                           "bound": encrypted.bound, "weight_sum": encrypted.weight_sum,
                                           "n_parts": encrypted.n_parts}}
    chunks = {f"c::{i}": np.frombuffer(c, np.uint8) for i, c in enumerate(encrypted.chunks)}
    np.savez(ledger.dir / "call-1.npz", __meta__=np.array(json.dumps(meta)), **chunks)
    replayed = ledger.run(1, lambda: pytest.fail("a stored call must not run again"))
    assert EncryptedVector.from_dict(replayed["weights"]) == encrypted
