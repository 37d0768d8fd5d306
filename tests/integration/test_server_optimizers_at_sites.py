"""FedAdam under verifiable secure aggregation, end to end, on three real datasites.

The federation is test_secure_aggregation.py's (real key ceremony, each datasite with its own roster
kit; the orchestrator holds the public HE file and roster.json). Every site takes the server step
itself from the verified, decrypted sum; the run shows that all of them hold the same global state
after every round, and the release gives the scientist that state's final model, x_R. No DP, to keep
it short: DP changes nothing in the step.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from support import approve_all
from test_secure_aggregation import federation, final_model, new_job

from domains.review.requests import RequestBook
from domains.site.datadir import DataDir

pytestmark = pytest.mark.slow

ROUNDS = 3
NAMES = ("s1", "s2", "s3")
__all__ = ["federation"]  # test_secure_aggregation.py's module fixture, reused here (not copied)


@pytest.fixture(scope="module")
def adam(federation: dict[str, Any]) -> dict[str, Any]:
    job = new_job(federation, "fedadam", rounds=ROUNDS, job=('strategy = "fedadam"',), dp=False)
    job.submit()
    first = job.state().submissions[0]
    review = RequestBook(federation["sites"][0].data_dir).review(first.request_id)
    approve_all(federation["sites"])
    job.wait_for_approval(timeout=60)
    return {"job": job, "result": job.run(progress=False), "review": review}


def _replayed(federation: dict[str, Any], job: Any) -> np.ndarray:
    """x_R recomputed in plaintext: each round's verified sum decrypted with a hospital's key, then
    the step."""
    from domains.runtime.models import build_model
    from domains.runtime.weights import flatten, get_weights
    from domains.shared.server_step import ServerState, server_update
    from privacy.he import load_context
    from privacy.secagg import aggregate_round, decrypt_round

    spec, keys = job.state().spec, federation["fed"]
    hospital = load_context(keys.kits["s1"] / "hospital-secret.medsyftkey")
    model = build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                        image_size=spec.image_size, seed=spec.train.seed)
    x, state = flatten(get_weights(model))[0], ServerState()
    for r in range(1, ROUNDS + 1):
        signed = job.run_dir.load_global(r)
        verified = aggregate_round(hospital, keys.roster, signed.parts, job_id=spec.job_id, call=r,
                                   recoveries=signed.recoveries, min_sites=spec.min_contributions)
        x, state = server_update(spec.server, x, decrypt_round(hospital, verified), state)
    return x


def test_fedadam_sites_hold_one_global_state_each_round_and_release_it(
        adam: dict[str, Any], federation: dict[str, Any]) -> None:
    from domains.runtime.site_global import SiteGlobal
    from domains.runtime.weights import flatten
    from privacy.he import fedavg_tolerance, fixed_point_scale

    job, result = adam["job"], adam["result"]
    spec = result.spec
    assert spec.server is not None and spec.server.kind == "fedadam" and spec.he is not None
    text = "\n".join(adam["review"].privacy.lines)
    assert ("server optimizer FedAdam η=0.1, β1=0.9, β2=0.99, τ=0.001, applied at each site to the decrypted "
            "aggregate") in text
    history = result.history
    assert (history["status"] == "ok").all() and list(history["round"]) == [1] * 3 + [2] * 3 + [3] * 3
    assert history.groupby("round")["global_state_hash"].nunique().tolist() == [1, 1, 1]
    metrics = result.metrics.query("site != 'pooled'")
    assert metrics.groupby("model_round")["global_state_hash"].nunique().tolist() == [1, 1, 1, 1]
    assert metrics.groupby("model_round")["site"].count().tolist() == [3, 3, 3, 3]
    assert metrics["global_state_hash"].nunique() == ROUNDS + 1  # a new state every round
    states = [SiteGlobal(DataDir(federation["root"] / n), spec).load() for n in NAMES]
    x_r = states[0].model
    assert all(s.call == ROUNDS + 1 and s.model.tobytes() == x_r.tobytes() for s in states)
    final_hash = metrics.query(f"model_round == {ROUNDS}")["global_state_hash"].iloc[0]
    assert states[0].digest(spec.job_id) == final_hash
    assert _replayed(federation, job).tobytes() == x_r.tobytes()  # the plaintext re-computation
    assert np.load(final_model(federation, "s2", spec.job_id)).tobytes() == x_r.tobytes()

    job.request_release()
    approve_all(federation["sites"])
    released = job.fetch_release()
    bound = spec.he.weight_bound
    tolerance = fedavg_tolerance(n_parts=1, scale=fixed_point_scale(bound=bound), weight_sum=1.0, bound=bound)
    assert np.max(np.abs(flatten(released.weights)[0] - np.clip(x_r, -bound, bound))) <= tolerance
    record = json.loads((job.run_dir.path / "release" / "release.json").read_text())
    assert record["global_state_hash"] == final_hash
