"""Asking every data owner to release the final model, and unmasking it once they all did.

Under HE the orchestrator ends a run holding only the encrypted final model. A release is
one more code request per datasite, whose constant names the approved job; each owner
reviews and approves it like the job itself. Every site of the job's approved roster must
take part: each datasite derives its index and the site count from that roster, never
from what the scientist writes beside it.
Each approved site returns its masked share (``domains.runtime.final_model``); only all the
shares together unmask the model. Under a roster job the ciphertext sent is the verified sum of
the last call's signed parts, the very sum each site checked and evaluated. Under a server
optimizer the final model is the global state every site computed from that sum (x_R), named by
the state hash every site reported at the final call: each site checks it and masks x_R. The released
artifact, ``RUN_DIR/release/``, holds the weights and a record of rounds, sites, ε per dataset
and the final metrics.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from domains import Weights, build_model, layout_of, release_function_name, release_source
from domains.shared.codec import to_wire
from domains.shared.plain_model import PlainModel, frozen_layout
from domains.shared.release_files import MODEL_FILE, RELEASE_JSON
from domains.shared.spec import JobSpec
from orchestrator.checkpoint import RunDir, RunState
from orchestrator.errors import NotApproved, ReleaseRequired
from orchestrator.secure import SecureAggregation, SignedRound
from orchestrator.site import Site, quiet
from orchestrator.submit import Submission, approval_table, load_submitted, request_records
from orchestrator.syft_api import add_code_endpoint
from orchestrator.transport import call_site
from privacy.durable import utc_stamp
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
    members = [s for s in sites if s.server_name in roster]
    with ThreadPoolExecutor(max(1, len(members))) as pool:  # each request is its own datasite's work
        submissions = list(pool.map(lambda pair: _request_release(*pair, spec=spec, path=path),
                                    enumerate(members)))
    _save_json(run_dir.path / "release" / "requests.json", [asdict(s) for s in submissions])
    return submissions


def _request_release(index: int, site: Site, *, spec: JobSpec, path: Path) -> Submission:
    roster = list(spec.sites)
    constant = {"job": spec.to_dict(), "site_index": roster.index(site.server_name),
                "n_sites": len(roster), "sites": roster}
    function = load_submitted(path, site, spec.dataset, module_name=f"{path.stem}_{index}",
                              constants={"release_spec": constant})
    with quiet():
        request = site.client.code.request_code_execution(function)
    if not hasattr(request, "id"):
        raise NotApproved(f"site '{site.name}' refused the release request: {request}")
    with quiet():  # callable here without fetching the whole API again
        add_code_endpoint(site.client, request, function)
    return Submission(site.name, str(request.id), release_function_name(spec.job_id))


def load_submissions(run_dir: RunDir) -> list[Submission]:
    path = run_dir.path / "release" / "requests.json"
    return [Submission(**s) for s in json.loads(path.read_text())] if path.exists() else []


def release_table(sites: list[Site], run_dir: RunDir) -> pd.DataFrame:
    submissions = load_submissions(run_dir)
    if not submissions:
        return pd.DataFrame(columns=["site", "request", "status", "reason"])
    table = approval_table(sites, submissions)
    _save_json(run_dir.path / "release" / "approvals.json", table.to_dict("records"))  # the dashboard's view
    return table


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
    final = final_ciphertext(run_dir, spec, aggregation)
    payload = release_payload(run_dir, spec, final)
    by_name = {s.name: s for s in sites}
    results = {}
    for sub in load_submissions(run_dir):
        site = by_name[sub.site]
        outcome = call_site(site, sub.function, lambda s=site: s.asset(spec.dataset, "labels"),
                            None, payload, constant_name="release")
        if outcome.status != "ok":
            raise ReleaseRequired(f"site '{sub.site}' did not release its share: {outcome.error}")
        results[sub.site] = outcome.result
    vector = unmask_final(spec, final, payload, list(results.values()))
    records = {site: result["record"] for site, result in results.items()}
    weights = _with_layout(spec, vector, list(results.values())).to_weights()
    artifact = _artifact(state, run_dir, records, payload.get("global_state_hash"))
    out = run_dir.path / "release"
    _save_json(out / "approvals.json", request_records(sites, load_submissions(run_dir)).to_dict("records"))
    np.savez(out / MODEL_FILE, **weights)
    _save_json(out / RELEASE_JSON, artifact)
    return weights, artifact


def release_payload(run_dir: RunDir, spec: JobSpec, final: EncryptedVector) -> dict[str, Any]:
    """What every site is sent: the final sum and, under a server optimizer, the hash of the final
    global state every site reported when it evaluated it (they must all agree)."""
    payload: dict[str, Any] = {"final": to_wire(final)}
    if spec.server is not None:
        metrics = run_dir.load_frame("metrics")
        rows = metrics[(metrics["model_round"] == spec.rounds) & (metrics["site"] != "pooled")]
        hashes = set(rows["global_state_hash"].dropna()) if "global_state_hash" in rows else set()
        if len(hashes) != 1:
            raise ReleaseRequired(f"the sites reported {len(hashes)} different final global states "
                                  f"({', '.join(sorted(h[:12] for h in hashes)) or 'none'}); there is no "
                                  "one final model to release")
        payload["global_state_hash"] = hashes.pop()
    return payload


def unmask_final(spec: JobSpec, final: EncryptedVector, payload: dict[str, Any],
                 results: list[dict[str, Any]]) -> np.ndarray:
    """The final model from every site's share: the final sum's mean, or under a server optimizer
    the final global state every site released (each must name the state it was sent)."""
    shares = [np.asarray(r["share"]) for r in results]
    scale: Any = final.scale
    weight_sum: Any = final.weight_sum
    if spec.server is not None:
        named = {r.get("global_state_hash") for r in results}
        encodings = {(r.get("scale"), r.get("weight_sum")) for r in results}
        if named != {payload["global_state_hash"]} or len(encodings) != 1:
            raise ReleaseRequired("the sites released different final global states; the shares cannot "
                                  "be unmasked into one model")
        scale, weight_sum = encodings.pop()
    return unmask_release(shares, plain_modulus=int(results[-1]["plain_modulus"]), scale=scale,
                          weight_sum=weight_sum, n_sites=len(spec.sites))


def _with_layout(spec: JobSpec, vector: np.ndarray, results: list[dict[str, Any]]) -> PlainModel:
    """The released vector with its layout: the one every site kept at the final call. Sites of
    an older version keep none; then the layout is the job's model's, built here."""
    kept = [r.get("layout") for r in results]
    if all(k is not None for k in kept):
        if any(k != kept[0] for k in kept):
            raise ReleaseRequired("the sites kept the final model in different layouts; they did not "
                                  "all run the approved job")
        return PlainModel(vector, frozen_layout(kept[0]))
    model = build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                        image_size=spec.image_size, seed=spec.train.seed)
    return PlainModel(vector, layout_of(model))


def final_ciphertext(run_dir: RunDir, spec: JobSpec, aggregation: SecureAggregation | None
                     ) -> EncryptedVector:
    """The run's final sum: the last checkpoint, or under a roster the verified sum of its parts."""
    final = run_dir.load_global(spec.rounds)
    if isinstance(final, SignedRound):
        if aggregation is None or not aggregation.verifiable:
            raise ReleaseRequired("the final model is a set of signed parts: set [privacy] roster to the "
                                  "federation's roster.json to release it")
        final = aggregation.verify(final, job_id=spec.job_id, min_sites=spec.min_contributions).vector
    if not isinstance(final, EncryptedVector):
        raise ReleaseRequired(f"no encrypted final model in {run_dir.path}; the run did not finish")
    return final


def _artifact(state: RunState, run_dir: RunDir, records: dict[str, Any], state_hash: str | None
              ) -> dict[str, Any]:
    spec = state.spec
    metrics = run_dir.load_frame("metrics")
    final = metrics[(metrics["site"] == "pooled") & (metrics["model_round"] == spec.rounds)]
    final = final.drop(columns=["global_state_hash"], errors="ignore")
    return {
        "job_id": spec.job_id, "model": spec.model, "dataset": spec.dataset, "rounds": spec.rounds,
        "sites": list(records), "released": utc_stamp(),
        "dp": spec.dp is not None, "he_key_id": spec.he.key_id if spec.he else None,
        "epsilon_per_site": {site: {k: r.get(k) for k in ("dataset", "epsilon", "delta")}
                             for site, r in records.items()},
        "final_metrics": final.drop(columns=["site"]).to_dict("records")[-1] if not final.empty else {},
        "spec": spec.to_dict(),
        **({"global_state_hash": state_hash} if state_hash else {}),
    }


def _save_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
