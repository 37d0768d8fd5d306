"""Asking every data owner to release the final model, and unmasking it once they all did.

Under HE the orchestrator ends a run holding only the encrypted final model. A release is
one more code request per datasite, whose constant names the job, this site's index and
how many sites must take part; each owner reviews and approves it like the job itself.
Each approved site returns its masked share (``domains.training.final``); only all the
shares together unmask the model. The released artifact, ``RUN_DIR/release/``, holds
the weights and a record of rounds, sites, ε per dataset and the final metrics.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from domains.training.models import build_model
from domains.training.weights import Weights, flatten, get_weights, unflatten
from orchestrator.checkpoint import RunDir, RunState
from orchestrator.errors import NotApproved, ReleaseRequired
from orchestrator.runner import call_site
from orchestrator.site import Site, quiet
from orchestrator.submit import Submission, approval_table, load_submitted
from privacy.he import EncryptedVector, unmask_release

RELEASE_TEMPLATE = '''"""medsyft release of job {job_id}'s final model: this site's masked share."""
import syft as sy
from syft.service.policy.policy import OutputPolicyExecuteCount


@sy.syft_function(
    input_policy=sy.MixedInputPolicy(
        client=client, labels=labels_asset, release=sy.Constant(val=release_spec), payload=dict
    ),
    output_policy=OutputPolicyExecuteCount(limit=1),
)
def {function}(labels, release, payload):
    """Decrypt the job's final model (only if it is the one this site evaluated last) and
    return it masked by this site's share: the model is readable only once EVERY site listed
    in `release` approved its own release request."""
    from domains.training.runtime import run_release

    return run_release(labels, release, payload)
'''


def _function_name(job_id: str) -> str:
    return f"medsyft_release_{job_id}"


def submit_release(sites: list[Site], state: RunState, run_dir: RunDir) -> list[Submission]:
    """One release request per site of the job (once per run directory)."""
    existing = load_submissions(run_dir)
    if existing:
        return existing
    if not state.finished or state.spec.he is None:
        raise ReleaseRequired("only a finished encrypted (HE) run needs a release; "
                              "run it to the end first")
    spec, names = state.spec, [s.name for s in sites]
    folder = run_dir.path / "submitted"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_function_name(spec.job_id)}.py"
    path.write_text(RELEASE_TEMPLATE.format(job_id=spec.job_id, function=_function_name(spec.job_id)))
    submissions = []
    for index, site in enumerate(sites):
        constant = {"job": spec.to_dict(), "site_index": index, "n_sites": len(sites), "sites": names}
        function = load_submitted(path, site, spec.dataset, module_name=f"{path.stem}_{index}",
                                  constants={"release_spec": constant})
        with quiet():
            request = site.client.code.request_code_execution(function)
        if not hasattr(request, "id"):
            raise NotApproved(f"site '{site.name}' refused the release request: {request}")
        submissions.append(Submission(site.name, str(request.id), _function_name(spec.job_id)))
    _save_json(run_dir.path / "release" / "requests.json", [asdict(s) for s in submissions])
    return submissions


def load_submissions(run_dir: RunDir) -> list[Submission]:
    path = run_dir.path / "release" / "requests.json"
    return [Submission(**s) for s in json.loads(path.read_text())] if path.exists() else []


def release_table(sites: list[Site], run_dir: RunDir) -> pd.DataFrame:
    submissions = load_submissions(run_dir)
    if not submissions:
        return pd.DataFrame(columns=["site", "request", "status", "reason"])
    return approval_table(sites, submissions)


def fetch_release(sites: list[Site], state: RunState, run_dir: RunDir) -> tuple[Weights, dict[str, Any]]:
    """Collect every site's share and unmask the final model; ReleaseRequired until all approved."""
    table = release_table(sites, run_dir)
    waiting = table.loc[table["status"] != "approved", "site"].tolist()
    if table.empty or waiting:
        raise ReleaseRequired(f"the release is not approved by: {', '.join(waiting) or 'anyone yet'}; "
                              "ask those data owners to review it, then fetch again")
    spec = state.spec
    final = run_dir.load_global(spec.rounds)
    if not isinstance(final, EncryptedVector):
        raise ReleaseRequired(f"no encrypted final model in {run_dir.path}; the run did not finish")
    by_name = {s.name: s for s in sites}
    shares, records = [], {}
    for sub in load_submissions(run_dir):
        site = by_name[sub.site]
        outcome = call_site(site, sub.function, lambda s=site: s.asset(spec.dataset, "labels"),
                            None, {"final": final.to_dict()}, constant_name="release")
        if outcome.status != "ok":
            raise ReleaseRequired(f"site '{sub.site}' did not release its share: {outcome.error}")
        shares.append(np.asarray(outcome.result["share"]))
        records[sub.site] = outcome.result["record"]
    vector = unmask_release(shares, plain_modulus=int(outcome.result["plain_modulus"]),
                            scale=final.scale, weight_sum=final.weight_sum, n_sites=len(shares))
    model = build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                        image_size=spec.image_size, seed=spec.train.seed)
    weights = unflatten(vector, flatten(get_weights(model))[1])
    artifact = _artifact(state, run_dir, records)
    out = run_dir.path / "release"
    np.savez(out / "model.npz", **weights)
    _save_json(out / "release.json", artifact)
    return weights, artifact


def _artifact(state: RunState, run_dir: RunDir, records: dict[str, Any]) -> dict[str, Any]:
    spec = state.spec
    metrics = run_dir.load_frame("metrics")
    final = metrics[(metrics["site"] == "pooled") & (metrics["model_round"] == spec.rounds)]
    return {
        "job_id": spec.job_id, "model": spec.model, "dataset": spec.dataset, "rounds": spec.rounds,
        "sites": list(records), "released": datetime.now(UTC).isoformat(timespec="seconds"),
        "dp": spec.dp is not None, "he_key_id": spec.he.key_id if spec.he else None,
        "epsilon_per_site": {site: {k: r.get(k) for k in ("dataset", "epsilon", "delta")}
                             for site, r in records.items()},
        "final_metrics": final.drop(columns=["site"]).to_dict("records")[-1] if not final.empty else {},
        "spec": spec.to_dict(),
    }


def _save_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
