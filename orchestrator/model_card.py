"""The released model's card: ``model_card.json`` and ``model_card.md`` beside its weights.

Everything on it comes from what ran, never from job.toml as it stands now:

- the model and training settings from the approved job (``state.json``'s spec: the constants every
  owner approved), the strategy from ``strategy.json`` (written when the rounds started);
- the data from each site's public dataset metadata (name, image count, class counts);
- privacy from the approved DP constants and the ε each site reported charging its ledger
  (``privacy.csv``; under HE also each site's release record);
- results from ``metrics.csv`` (the final model's pooled and per-site validation figures), the test
  split when the scientist holds one, and ``baseline.csv`` when a centralized model was trained;
- approvals from the datasites' request records: when each owner's decision on the job and on the
  release was made (PySyft's request ``updated_at``). PySyft 0.9.5 never records which account
  approved (``approving_user_verify_key`` stays empty); only a datasite's data owner can, so the
  card names the site's owner, and the datasite's own audit log holds who it was.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from domains import build_model
from domains.shared.release_files import CARD_JSON, CARD_MD
from orchestrator.result import latest_privacy
from privacy.durable import atomic_write, utc_stamp

if TYPE_CHECKING:
    from orchestrator.checkpoint import RunDir
    from orchestrator.job import FederatedJob
    from orchestrator.result import FederatedResult

PREPROCESSING = ("decoded as publish decodes it (PNG/JPEG; DICOM with rescale, VOI window and MONOCHROME1 "
                 "inverted; 16-bit stretched from its own min to max), grey/RGB converted (BT.601 luma), "
                 "resized to {size}x{size} px (area down, bilinear up; aspect change over 1.25x refused), "
                 "uint8, then divided by 255")
INTENDED_USE = ("Research use: a {task} model of {labels} on {modality} images like those the listed "
                "datasets hold. It is not a medical device and was not validated for diagnosis.")
LIMITS = [
    "Validation figures come from the sites' own held-out splits; a test split, when shown, is the only "
    "figure from data no model choice saw.",
    "Performance on images from other scanners, protocols, populations or preprocessing is unknown.",
    "Under differential privacy the released model carries its training's ε; later use of it costs "
    "nothing more, but the ε spent cannot be taken back.",
]


def build_card(job: FederatedJob, result: FederatedResult, *, release: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """The card of *result*'s final model (*release*: the HE release record, when it was released)."""
    state = job.state()
    assert state is not None, "a card needs a submitted job"
    spec = state.spec
    run = job.run_dir
    metas: dict[str, dict[str, Any]] = run.load_json("datasets") or job.site_metadata()
    labels = _label_names(metas, spec.num_classes)
    network = build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                          image_size=spec.image_size)
    card: dict[str, Any] = {
        "card_version": 1,
        "written": utc_stamp(),
        "job_id": spec.job_id,
        "model": {
            "architecture": spec.model,
            "parameters": int(sum(p.numel() for p in network.parameters())),
            "input": {"channels": spec.in_channels, "height": spec.image_size, "width": spec.image_size,
                      "dtype": "float32 in [0, 1]"},
            "task": "multi-label" if spec.multi_label else "multi-class",
            "label_names": labels,
            "preprocessing": PREPROCESSING.format(size=spec.image_size),
        },
        "data": [_site_data(name, spec.dataset, metas.get(name, {}), state.sizes)
                 for name in _site_order(job, metas)],
        "training": {
            "rounds": spec.rounds, "rounds_completed": state.completed_round, "finished": state.finished,
            "strategy": run.load_json("strategy") or {"name": "unknown (run before strategy.json)"},
            "local": {k: v for k, v in asdict(spec.train).items() if k != "class_weights"},
            "class_weights": list(spec.train.class_weights),
            "validation_fraction": spec.val_fraction, "split_seed": spec.split_seed,
            "roster": list(spec.sites), "min_contributions": spec.min_contributions,
        },
        "privacy": _privacy(spec, run.load_frame("privacy"), release),
        "results": _results(run.load_frame("metrics"), spec.rounds, run.path, job, result, metas),
        "approvals": _approvals(run),
        "intended_use": INTENDED_USE.format(task="multi-label" if spec.multi_label else "classification",
                                            labels=", ".join(labels),
                                            modality=_modality(metas)),
        "limits": LIMITS,
        "spec": spec.to_dict(),
    }
    return card


def _site_order(job: FederatedJob, metas: dict[str, dict[str, Any]]) -> list[str]:
    return list(metas) or [s.name for s in job.sites]


def _label_names(metas: dict[str, dict[str, Any]], n: int) -> list[str]:
    names = {tuple(m.get("label_names") or ()) for m in metas.values()}
    if len(names) == 1 and len(first := list(names.pop())) == n:
        return [str(x) for x in first]
    return [f"class {k}" for k in range(n)]


def _modality(metas: dict[str, dict[str, Any]]) -> str:
    kinds = sorted({str(m.get("modality", "unknown")) for m in metas.values()})
    return "/".join(kinds) or "unknown"


def _site_data(name: str, dataset: str, meta: dict[str, Any], sizes: dict[str, int]) -> dict[str, Any]:
    return {"site": name, "dataset": dataset, "images": meta.get("n"),
            "class_counts": meta.get("class_counts"), "modality": meta.get("modality"),
            "synthetic": meta.get("synthetic"), "training_split": sizes.get(name)}


def _privacy(spec: Any, privacy: pd.DataFrame, release: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"dp": spec.dp is not None, "he": spec.he is not None}
    if spec.he is not None:
        out["he_key_id"] = spec.he.key_id
        out["he_weight_bound"] = spec.he.weight_bound
    if spec.dp is None:
        return out
    out.update(noise_multiplier=spec.dp.noise_multiplier, max_grad_norm=spec.dp.max_grad_norm,
               accountant=spec.dp.accountant)
    per_site: dict[str, dict[str, Any]] = {}
    for site, row in latest_privacy(privacy).iterrows():
        per_site[str(site)] = {
            "dataset": spec.dataset, "epsilon": float(row["job_epsilon_spent"]), "delta": float(row["delta"]),
            "noise_multiplier": float(row["noise_multiplier"]),
            "dataset_epsilon_spent": float(row["dataset_epsilon_spent"]),
            "dataset_epsilon_budget": float(row["dataset_epsilon_budget"])}
    for site, record in ((release or {}).get("epsilon_per_site") or {}).items():
        per_site.setdefault(site, {}).update({k: v for k, v in record.items() if v is not None})
    out["per_site"] = per_site
    return out


def _results(metrics: pd.DataFrame, rounds: int, run_dir: Path, job: FederatedJob,
             result: FederatedResult, metas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    from orchestrator import holdout

    out: dict[str, Any] = {}
    final = metrics[metrics["model_round"] == rounds] if not metrics.empty else metrics
    drop = ["model_round", "global_state_hash"]
    out["validation"] = {str(r["site"]): _row(r, drop)
                         for _, r in final.iterrows()}
    if result.weights is not None:
        test, why = holdout.score_job(job.config, result.spec, result.weights, metas.values())
        out["test"] = ({"source": test.source, "n": test.metrics.n, "accuracy": test.metrics.accuracy,
                        "auc": test.metrics.auc} if test else {"not_scored": why})
    baseline = run_dir / "baseline.csv"
    if baseline.exists():
        row = pd.read_csv(baseline).iloc[0]
        out["centralized_baseline"] = {k: _plain(v) for k, v in row.items()}
    return out


def _row(row: pd.Series, drop: list[str]) -> dict[str, Any]:
    return {str(k): _plain(v) for k, v in row.drop(["site", *drop], errors="ignore").items()}


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value != value:  # NaN: JSON has none
        return None
    return value.item() if hasattr(value, "item") else value


def _approvals(run: RunDir) -> list[dict[str, Any]]:
    """The request records kept when every owner had approved the job (``approvals.json``) and the
    release (``release/approvals.json``): no site is asked again, so a site down since does not
    hold the card up."""
    rows = []
    for what, name in (("job", "approvals"), ("release", "release/approvals")):
        for r in run.load_json(name) or []:
            rows.append({"site": r["site"], "what": what, "request": r["request"], "status": r["status"],
                         "requested_at": r["requested_at"], "decided_at": r["decided_at"],
                         "approved_by": f"{r['site']}'s data owner" if r["status"] == "approved" else None})
    return rows


def write_card(folder: Path, card: dict[str, Any]) -> tuple[Path, Path]:
    """``model_card.json`` and ``model_card.md`` in *folder*, each replaced atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / CARD_JSON, json.dumps(card, indent=2, default=str), mode=0o644)
    atomic_write(folder / CARD_MD, render_markdown(card), mode=0o644)
    return folder / CARD_JSON, folder / CARD_MD


def render_markdown(card: dict[str, Any]) -> str:
    """The card as a person reads it: the same facts as the JSON, in tables."""
    lines = [f"# Model card: job {card['job_id']}", "",
             f"Written {card['written']} from the run's own records.", ""]
    lines += _model_section(card["model"]) + _data_section(card["data"]) + _training_section(card["training"])
    lines += _privacy_section(card["privacy"]) + _results_section(card["results"])
    lines += ["## Approvals (the datasites' request records)", "",
              _table(pd.DataFrame(card["approvals"])) if card["approvals"] else "(none recorded)", "",
              "## Intended use", "", card["intended_use"], "", "## Limits", "",
              *[f"- {limit}" for limit in card["limits"]], ""]
    return "\n".join(lines)


def _model_section(m: dict[str, Any]) -> list[str]:
    size = m["input"]
    return ["## Model", "",
            f"- architecture: `{m['architecture']}`, {m['parameters']:,} parameters",
            f"- input: {size['channels']} x {size['height']} x {size['width']}, {size['dtype']}",
            f"- task: {m['task']}; labels: {', '.join(m['label_names'])}",
            f"- preprocessing: {m['preprocessing']}", ""]


def _data_section(data: list[dict[str, Any]]) -> list[str]:
    frame = pd.DataFrame(data)
    if "class_counts" in frame:
        frame["class_counts"] = frame["class_counts"].map(_counts)
    return ["## Data (public metadata)", "", _table(frame), ""]


def _training_section(t: dict[str, Any]) -> list[str]:
    strategy = t["strategy"]
    he = "; the orchestrator only summed ciphertexts" if strategy.get("encrypted_aggregation") else ""
    done = "" if t["finished"] else " (not finished)"
    return ["## Training", "",
            f"- rounds: {t['rounds_completed']} of {t['rounds']}{done}",
            f"- strategy: {strategy.get('name')} {json.dumps(strategy.get('settings', {}))}{he}",
            f"- local training: {json.dumps(t['local'])}",
            f"- roster: {', '.join(t['roster']) or '(none)'}; validation fraction {t['validation_fraction']}",
            ""]


def _privacy_section(p: dict[str, Any]) -> list[str]:
    dp = "OFF"
    if p["dp"]:
        dp = (f"on (Opacus DP-SGD, σ = {p['noise_multiplier']}, C = {p['max_grad_norm']}, "
              f"{p['accountant']} accountant)")
    he = f"on (key {p['he_key_id'][:8]})" if p["he"] else "OFF"
    lines = ["## Privacy", "", f"- differential privacy: {dp}", f"- homomorphic encryption of updates: {he}",
             ""]
    if p.get("per_site"):
        lines += [_table(pd.DataFrame(p["per_site"]).T.rename_axis("site").reset_index()), ""]
    return lines


def _results_section(r: dict[str, Any]) -> list[str]:
    lines = ["## Results", "", "Validation, final model:", "",
             _table(pd.DataFrame(r["validation"]).T.rename_axis("site").reset_index()), ""]
    test = r.get("test")
    if test and "source" in test:
        lines += [f"Test split ({test['source']}, {test['n']} images): accuracy {test['accuracy']:.3f}, "
                  f"ROC-AUC {test['auc']:.3f}", ""]
    elif test:
        lines += [f"Test split: not scored ({test['not_scored']})", ""]
    if "centralized_baseline" in r:
        baseline = pd.DataFrame([r["centralized_baseline"]])
        lines += ["Centralized baseline on the same data:", "", _table(baseline), ""]
    return lines


def _counts(value: Any) -> str:
    return ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)


def _table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no tabulate needed)."""
    if frame.empty:
        return "(none)"
    cols = [str(c) for c in frame.columns]

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v).replace("|", "/")

    rows = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    rows += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(rows)
