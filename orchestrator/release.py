"""Asking every data owner to release the final model, and unmasking it once they all did.

Under HE the orchestrator ends a run holding only the encrypted final model. A release is
one more code request per datasite, whose constant names the approved job; each owner
reviews and approves it like the job itself. Every site of the job's approved roster must
take part: each datasite derives its index and the site count from that roster, never
from what the scientist writes beside it.
Each approved site returns its masked share (``domains.training.final``); only all the
shares together unmask the model. Under a roster job the ciphertext sent is the verified sum of
the last call's signed parts, the very sum each site checked and evaluated. The released
artifact, ``RUN_DIR/release/``, holds the weights and a record of rounds, sites, ε per dataset
and the final metrics.
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
from domains.training.spec import JobSpec
from domains.training.templates import release_function_name, release_source
from domains.training.weights import Weights, flatten, get_weights, unflatten
from orchestrator.checkpoint import RunDir, RunState
from orchestrator.errors import NotApproved, ReleaseRequired
from orchestrator.runner import call_site
from orchestrator.secure import SecureAggregation, SignedRound
from orchestrator.site import Site, quiet
from orchestrator.submit import Submission, approval_table, load_submitted
from privacy.he import EncryptedVector, unmask_release


def submit_release(sites: list[Site], state: RunState, run_dir: RunDir) -> list[Submission]:
    """One release request per site of the job (once per run directory)."""
    existing = load_submissions(run_dir)
    if existing:
        return existing
    if not state.finished or state.spec.he is None:
        raise ReleaseRequired("only a finished encrypted (HE) run needs a release; "
                              "run it to the end first")
    spec = state.spec
    roster = list(spec.sites)
    missing = sorted(set(roster) - {s.server_name for s in sites})
    if missing:
        raise ReleaseRequired(f"the release needs every site of the job's roster; not connected: "
                              f"{', '.join(missing)} (add them to job.toml's [[sites]])")
    folder = run_dir.path / "submitted"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{release_function_name(spec.job_id)}.py"
    path.write_text(release_source(job_id=spec.job_id))
    submissions = []
    for index, site in enumerate(s for s in sites if s.server_name in roster):
        constant = {"job": spec.to_dict(), "site_index": roster.index(site.server_name),
                    "n_sites": len(roster), "sites": roster}
        function = load_submitted(path, site, spec.dataset, module_name=f"{path.stem}_{index}",
                                  constants={"release_spec": constant})
        with quiet():
            request = site.client.code.request_code_execution(function)
        if not hasattr(request, "id"):
            raise NotApproved(f"site '{site.name}' refused the release request: {request}")
        submissions.append(Submission(site.name, str(request.id), release_function_name(spec.job_id)))
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


def fetch_release(sites: list[Site], state: RunState, run_dir: RunDir, *,
                  aggregation: SecureAggregation | None = None) -> tuple[Weights, dict[str, Any]]:
    """Collect every site's share and unmask the final model; ReleaseRequired until all approved.

    Under a roster job the final model is the verified sum of the last call's signed parts,
    computed here with *aggregation*'s public context exactly as every site computed it, so each
    site can check its digest against the model it evaluated.
    """
    table = release_table(sites, run_dir)
    waiting = table.loc[table["status"] != "approved", "site"].tolist()
    if table.empty or waiting:
        raise ReleaseRequired(f"the release is not approved by: {', '.join(waiting) or 'anyone yet'}; "
                              "ask those data owners to review it, then fetch again")
    spec = state.spec
    final = _final_ciphertext(run_dir, spec, aggregation)
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
                            scale=final.scale, weight_sum=final.weight_sum, n_sites=len(spec.sites))
    model = build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                        image_size=spec.image_size, seed=spec.train.seed)
    weights = unflatten(vector, flatten(get_weights(model))[1])
    artifact = _artifact(state, run_dir, records)
    out = run_dir.path / "release"
    np.savez(out / "model.npz", **weights)
    _save_json(out / "release.json", artifact)
    return weights, artifact


def _final_ciphertext(run_dir: RunDir, spec: JobSpec, aggregation: SecureAggregation | None
                      ) -> EncryptedVector:
    final = run_dir.load_global(spec.rounds)
    if isinstance(final, SignedRound):
        if aggregation is None or not aggregation.verifiable:
            raise ReleaseRequired("the final model is a set of signed parts: set [privacy] roster to the "
                                  "federation's roster.json to release it")
        final = aggregation.verify(final, job_id=spec.job_id, min_sites=spec.min_contributions).vector
    if not isinstance(final, EncryptedVector):
        raise ReleaseRequired(f"no encrypted final model in {run_dir.path}; the run did not finish")
    return final


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
