"""Cross-site evaluation: the final model scored on every hospital's private test split.

In a real federation no test split is public. Each hospital publishes its own as a separate
dataset (``medsyft domain publish --split test --name pneumoniamnist-test``) with its own ε
budget, and :func:`submit_evaluation` asks every site to score the job's final model on it once:
one more code request per site, whose ``evaluation`` constant (:class:`EvalSpec`) the owner
reviews like a job. The model is the one each site kept at the job's final call under HE (the
scientist cannot read it before its release), or the plaintext final model sent with the call.

Each approved site returns only counts with Gaussian noise, charged to its test dataset's ledger
(:mod:`domains.runtime.cross_eval`); :func:`fetch_evaluation` pools them into one test score over
every site's images, with the standard deviation the noise gives each figure (computed from
public numbers only). NVIDIA FLARE's cross-site evaluation returns exact metrics; here they are
differentially private and cost a budget the hospital controls.

Everything is kept in ``RUN_DIR/evaluation/EVAL_ID/``: the constant every site was sent, the
requests, and the results. ``RUN_DIR/evaluation/latest`` names the current one.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from domains import Weights, evaluate_function_name, evaluate_source
from domains.shared.codec import to_wire
from domains.shared.counts import EvalResult, noise_sd, pool
from domains.shared.errors import TrainingError
from domains.shared.eval_spec import EvalSpec
from domains.shared.plain_model import PlainModel
from orchestrator.checkpoint import RunDir, RunState
from orchestrator.config import EvaluationConfig
from orchestrator.errors import ConfigError, NotApproved, ReleaseRequired
from orchestrator.site import Site, quiet
from orchestrator.submit import Submission, approval_table, load_submitted
from orchestrator.syft_api import add_code_endpoint
from orchestrator.transport import call_site

FOLDER = "evaluation"


@dataclass
class CrossSiteResult:
    """Every site's noisy test counts, pooled, with what they cost."""

    spec: EvalSpec
    per_site: dict[str, EvalResult]
    privacy: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_evaluated: dict[str, str] = field(default_factory=dict)  # site -> why (denied, refused)

    @cached_property
    def pooled(self) -> EvalResult:
        return pool(list(self.per_site.values()))

    @cached_property
    def pooled_noise_sd(self) -> tuple[float, float]:
        """The pooled accuracy's and AUC's noise sd (a bootstrap: computed once per result)."""
        return noise_sd(self.pooled, eval_noise_multiplier=self.spec.noise_multiplier,
                        sites=len(self.per_site))

    def table(self) -> pd.DataFrame:
        """One row per site and a pooled row: noisy n, accuracy and AUC with their noise sd, ε."""
        rows = []
        sigma = self.spec.noise_multiplier
        for site, counts in self.per_site.items():
            acc_sd, auc_sd = noise_sd(counts, eval_noise_multiplier=sigma)
            eps = self.privacy.get(site, {})
            rows.append({"site": site, "images (noisy)": counts.n, "test accuracy": counts.accuracy,
                         "± (noise sd)": acc_sd, "test ROC-AUC": counts.auc, "± (AUC noise sd)": auc_sd,
                         "ε spent": eps.get("epsilon"),
                         "ε left on dataset": eps.get("dataset_epsilon_remaining")})
        pooled = self.pooled
        acc_sd, auc_sd = self.pooled_noise_sd
        rows.append({"site": "pooled", "images (noisy)": pooled.n, "test accuracy": pooled.accuracy,
                     "± (noise sd)": acc_sd, "test ROC-AUC": pooled.auc, "± (AUC noise sd)": auc_sd,
                     "ε spent": None, "ε left on dataset": None})
        return pd.DataFrame(rows)

    def line(self) -> str:
        """The headline: the pooled test score over every site's private test split."""
        pooled = self.pooled
        acc_sd, auc_sd = self.pooled_noise_sd
        eps = [p["epsilon"] for p in self.privacy.values() if p.get("epsilon") is not None]
        spent = f", ε={max(eps):.2f} per site" if eps else ""
        return (f"cross-site test ({len(self.per_site)} hospitals' private '{self.spec.dataset}', about "
                f"{pooled.n} images never trained on; DP counts, σ={self.spec.noise_multiplier:g}{spent}): "
                f"accuracy {pooled.accuracy:.3f} ± {acc_sd:.3f}, ROC-AUC {pooled.auc:.3f} ± {auc_sd:.3f}")


def _folder(run_dir: RunDir, eval_id: str) -> Path:
    return run_dir.path / FOLDER / eval_id


def latest(run_dir: RunDir) -> tuple[EvalSpec, list[Submission]] | None:
    """The current evaluation of this run directory and its requests, or None."""
    pointer = run_dir.path / FOLDER / "latest"
    if not pointer.exists():
        return None
    folder = _folder(run_dir, pointer.read_text().strip())
    record = json.loads((folder / "requests.json").read_text())
    return EvalSpec.from_dict(record["evaluation"]), [Submission(**s) for s in record["requests"]]


def make_spec(state: RunState, config: EvaluationConfig, *, have_weights: bool) -> EvalSpec:
    """The evaluation of *state*'s final model that ``[evaluation]`` describes."""
    if not state.finished:
        raise ReleaseRequired("the job has not finished: run it to the end before evaluating its final model")
    if not config.dataset:
        raise ConfigError('[evaluation] dataset is not set: name the test dataset every hospital '
                          'published (`medsyft domain publish --split test --name NAME`), e.g. '
                          'dataset = "pneumoniamnist-test"')
    spec = state.spec
    model = "final" if spec.he is not None else "sent"
    if model == "sent" and not have_weights:
        raise ReleaseRequired("no final model in the run directory to send; run the job to the end first")
    try:
        return EvalSpec(job=spec, dataset=config.dataset, noise_multiplier=config.noise_multiplier,
                        bins=config.bins, model=model)
    except TrainingError as exc:
        raise ConfigError(f"[evaluation]: {exc}") from exc


def submit_evaluation(sites: list[Site], ev: EvalSpec, run_dir: RunDir) -> list[Submission]:
    """One evaluation request per site that can score the model; kept in the run directory."""
    roster = set(ev.job.sites)
    chosen = [s for s in sites if ev.model == "sent" or s.server_name in roster]
    if not chosen:
        raise ConfigError("no [[sites]] entry is a site of the job's roster, which kept the final model")
    for site in chosen:
        site.metadata(ev.dataset)  # SiteUnavailable naming the site without that test dataset
    folder = _folder(run_dir, ev.eval_id)
    folder.mkdir(parents=True, exist_ok=True)
    function = evaluate_function_name(ev.eval_id)
    path = folder / f"{function}.py"
    path.write_text(evaluate_source(eval_id=ev.eval_id))
    submissions = []
    for index, site in enumerate(chosen):
        code = load_submitted(path, site, ev.dataset, module_name=f"{function}_{index}",
                              constants={"eval_spec": ev.to_dict()})
        with quiet():
            request = site.client.code.request_code_execution(code)
        if not hasattr(request, "id"):
            raise NotApproved(f"site '{site.name}' refused the evaluation request: {request}")
        with quiet():  # callable here without fetching the whole API again
            add_code_endpoint(site.client, request, code)
        submissions.append(Submission(site.name, str(request.id), function))
    _save_json(folder / "requests.json",
               {"evaluation": ev.to_dict(), "requests": [asdict(s) for s in submissions]})
    (run_dir.path / FOLDER / "latest").write_text(ev.eval_id)
    return submissions


def fetch_evaluation(sites: list[Site], ev: EvalSpec, submissions: list[Submission], run_dir: RunDir,
                     weights: Weights | None) -> CrossSiteResult:
    """Call every approved site once and pool their noisy counts; NotApproved while any is pending.

    A site that denied the request, or whose call was refused, is left out and named in the result.
    """
    table = approval_table(sites, submissions)
    pending = table.loc[~table["status"].isin(["approved", "rejected"]), "site"].tolist()
    if pending:
        raise NotApproved(f"the evaluation is not yet reviewed by: {', '.join(pending)}; ask those data "
                          "owners to review it, then run `medsyft evaluate` again")
    payload: dict[str, Any] = {"model": ev.model}
    if ev.model == "sent":
        if weights is None:
            raise ReleaseRequired("this evaluation sends the final model, and the run directory has none")
        payload["weights"] = to_wire(PlainModel.from_weights(weights))
    by_name = {s.name: s for s in sites}
    per_site: dict[str, EvalResult] = {}
    privacy: dict[str, dict[str, Any]] = {}
    left_out: dict[str, str] = {}
    for sub, (_, row) in zip(submissions, table.iterrows(), strict=True):
        if row["status"] != "approved":
            left_out[sub.site] = f"denied: {row['reason'] or 'no reason given'}"
            continue
        site = by_name[sub.site]
        outcome = call_site(site, sub.function, lambda s=site: s.asset(ev.dataset, "labels"), None, payload,
                            constant_name="evaluation")
        if outcome.status != "ok":
            left_out[sub.site] = str(outcome.error)
            continue
        per_site[sub.site] = EvalResult.from_dict(outcome.result["eval"])
        privacy[sub.site] = dict(outcome.result.get("privacy") or {})
    if not per_site:
        reasons = "; ".join(f"{s}: {why}" for s, why in left_out.items())
        raise NotApproved(f"no site scored the model: {reasons}")
    result = CrossSiteResult(ev, per_site, privacy, left_out)
    folder = _folder(run_dir, ev.eval_id)
    _save_json(folder / "results.json", {
        "evaluation": ev.to_dict(), "per_site": {s: c.to_dict() for s, c in per_site.items()},
        "privacy": privacy, "not_evaluated": left_out, "pooled": result.pooled.to_dict(),
        "headline": result.line()})
    result.table().to_csv(folder / "results.csv", index=False)
    return result


def load_result(run_dir: RunDir) -> CrossSiteResult | None:
    """The latest evaluation's stored result, without contacting any site."""
    found = latest(run_dir)
    if found is None:
        return None
    path = _folder(run_dir, found[0].eval_id) / "results.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return CrossSiteResult(found[0], {s: EvalResult.from_dict(c) for s, c in data["per_site"].items()},
                           data["privacy"], data["not_evaluated"])


def _save_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_jsonable))


def _jsonable(value: Any) -> Any:
    """numpy scalars as numbers; anything else json cannot write as its text."""
    return value.item() if isinstance(value, np.generic) else str(value)
