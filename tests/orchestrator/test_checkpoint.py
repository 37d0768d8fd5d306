"""Run-directory checkpoints: a roster round's signed parts round-trip; older encodings still load."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from domains.shared.plain_model import PlainModel
from orchestrator.checkpoint import RunDir
from orchestrator.secure import SignedRound
from privacy.ceremony import init_federation
from privacy.he import EncryptedVector, load_context
from privacy.roster import load_site_kit
from privacy.secagg import aggregate_round, make_part, recover_masks


def test_a_signed_round_and_the_older_encodings_round_trip(tmp_path: Path) -> None:
    fed = init_federation(tmp_path / "keys", ["a", "b", "c"])
    kits = {n: load_site_kit(f) for n, f in fed.kits.items()}
    hospital, public = load_context(fed.secret_path), load_context(fed.public_path)
    made = {n: make_part(kits[n], hospital, np.linspace(-1, 1, 5000), weight=1 / 3, bound=4.0, job_id="j",
                         call=2, round_sites=["a", "b", "c"]) for n in kits}
    recoveries = tuple(recover_masks(kits[n], made[n], survivors=["a", "b"]) for n in ("a", "b"))
    run = RunDir(tmp_path / "run")
    run.save_global(2, SignedRound(call=2, parts=(made["a"], made["b"]), recoveries=recoveries))
    loaded = run.load_global(2)
    assert isinstance(loaded, SignedRound) and loaded.call == 2 and loaded.sites == ("a", "b")
    assert [p.statement() for p in loaded.parts] == [made["a"].statement(), made["b"].statement()]
    assert loaded.recoveries == recoveries
    verified = aggregate_round(public, fed.roster, loaded.parts, job_id="j", call=2,
                               recoveries=loaded.recoveries)
    assert verified.dropped == ("c",) and verified.vector.n_parts == 2  # what every site will add
    summed = public.aggregate([made["a"].vector, made["b"].vector])
    run.save_global(3, summed)  # a run without a roster: the encrypted sum
    assert isinstance(run.load_global(3), EncryptedVector) and run.load_global(3).digest() == summed.digest()
    run.save_global(4, {"w": np.ones(3, np.float32)})  # plaintext
    plain = run.load_global(4)  # named arrays are kept as a plaintext model with its layout
    assert isinstance(plain, PlainModel) and np.array_equal(plain.to_weights()["w"], np.ones(3))
