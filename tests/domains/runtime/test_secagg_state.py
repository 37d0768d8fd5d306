"""A datasite's secure-aggregation record: written once, kept across processes, never reset."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from domains.runtime import parts
from domains.runtime.errors import CallLogCorrupt, TrainingError
from domains.runtime.secagg_state import SecAggState
from domains.site.datadir import DataDir
from privacy.ceremony import init_federation
from privacy.he import load_context
from privacy.roster import load_site_kit
from privacy.secagg import make_part, recover_masks

SITES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    fed = init_federation(tmp_path_factory.mktemp("state") / "keys", SITES)
    kits = {n: load_site_kit(f) for n, f in fed.kits.items()}
    hospital = load_context(fed.secret_path)
    made = {n: make_part(kits[n], hospital, np.full(100, 0.5), weight=1 / 3, bound=4.0, job_id="j", call=1,
                         round_sites=SITES) for n in SITES}
    return {"kits": kits, "parts": made}


def test_own_part_round_trips_and_is_written_once(signed: dict[str, Any], tmp_path: Path) -> None:
    state = SecAggState(DataDir(tmp_path), "j")
    part = signed["parts"]["a"]
    assert state.own_part(1) is None
    state.keep_own(part)
    again = SecAggState(DataDir(tmp_path), "j").own_part(1)  # another process reads the same file
    assert again is not None and again.statement() == part.statement()
    assert again.vector.digest() == part.vector.digest()
    assert stat.S_IMODE((state.dir / "part-1.npz").stat().st_mode) == 0o600
    with pytest.raises(TrainingError, match="never signs two parts"):
        state.keep_own(part)


def test_shown_parts_and_issued_recoveries_feed_recover_masks(signed: dict[str, Any], tmp_path: Path) -> None:
    from privacy.errors import RecoveryRefused

    state = SecAggState(DataDir(tmp_path), "j")
    made, kit = signed["parts"], signed["kits"]["a"]
    state.keep_own(made["a"])
    state.record_shown(1, [made["a"], made["c"]])
    state.record_shown(1, [made["c"]])  # shown twice, kept once
    assert [p.site for p in state.shown(1)] == ["a", "c"]
    recovery = recover_masks(kit, made["a"], survivors=["a", "c"], seen_parts=state.shown(1),
                             issued=state.issued())  # b dropped: its part was never shown here
    state.record_issued(recovery)
    state.record_issued(recovery)
    assert state.issued() == [recovery]
    with pytest.raises(RecoveryRefused, match="did not drop"):  # c's signed part was shown here
        recover_masks(kit, made["a"], survivors=["a", "b"], seen_parts=state.shown(1), issued=[])


def test_a_damaged_record_names_its_file_and_is_not_reset(signed: dict[str, Any], tmp_path: Path) -> None:
    state = SecAggState(DataDir(tmp_path), "j")
    state.record_transcript(1, "0" * 64)
    state.path.write_text("{not json")
    with pytest.raises(CallLogCorrupt, match=r"state\.json"):
        state.record_transcript(2, "1" * 64)
    assert state.path.read_text() == "{not json"
    state.keep_own(signed["parts"]["b"])
    (state.dir / "part-1.npz").write_bytes(b"junk")
    with pytest.raises(CallLogCorrupt, match=r"part-1\.npz"):
        state.own_part(1)


def test_part_records_round_trip(signed: dict[str, Any]) -> None:
    part = signed["parts"]["c"]
    record, chunks = parts.to_record(part)
    assert chunks.dtype == np.uint8 and "chunks" not in record["vector"]
    back = parts.from_record(record, chunks)
    assert back.statement() == part.statement() and back.vector.digest() == part.vector.digest()
    header, vector = parts.split(part)
    assert parts.join(header, vector).signature == part.signature
