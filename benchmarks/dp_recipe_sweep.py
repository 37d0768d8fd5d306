"""Search for a DP-SGD recipe fast: FedAvg over IID shards in one process, scored on the test split.

Usage::

    .venv/bin/python benchmarks/dp_recipe_sweep.py --source ../shared/data/pneumoniamnist.npz \
        [--recipe '{"optimizer": "sgd", "lr": 0.3, "rounds": 15, "loss": "logit-adjusted"}' ...] \
        [--seeds 0,1] [--sites 3] [--epsilon 8]

The datasites' own code without the processes: each of ``--sites`` IID shards (the demo's
sharding) keeps its DP hold-out (:func:`domains.runtime.noisy_metrics.hash_split`, 20%), trains
with the job's task (:func:`domains.runtime.tasks.task_for`: the same loss, class weights and
logit offsets the sites use) under real Opacus at the σ each site derives for a target ε (the
validation releases included as the ledger charges them: one per evaluating call at the job's
σ_eval, the demo's 5 unless a recipe sets ``eval_noise``; ``eval_every`` thins them as the job
key does), and the models are averaged by
FedAvg (``"dp": false`` in a recipe trains without DP, for the plaintext goals). HE is left out:
it changes no number here beyond its fixed-point rounding. Prints one
row per recipe and seed (σ, exact ACC/AUC on the source's official validation split, which no
model trains on and by which recipes are chosen, with its balanced accuracy beside it (the two
splits' priors differ), and on the test split, the spread of the logit
margin between the classes), then mean ± std per recipe, best validation accuracy first. For
the headline, run the winning recipe through the real demo (``benchmarks/recipes.py``); this
script only narrows the search.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from domains.data.formats import load_source
from domains.data.partition import ShardSpec, parse_partition, shard
from domains.runtime.evaluation import evaluate_model
from domains.runtime.local import train_local
from domains.runtime.noisy_metrics import hash_split
from domains.runtime.tasks import task_for
from domains.runtime.weights import fedavg, get_weights, set_weights
from domains.shared.spec import DPTraining, JobSpec, TrainConfig, balanced_weights, logit_offsets
from privacy.accounting import DPConfig, noise_multiplier_for

DEFAULTS: dict[str, Any] = {"optimizer": "adam", "lr": 0.01, "batch": 64, "rounds": 8, "epochs": 2,
                            "loss": "cross-entropy", "tau": 1.0, "class_weights": "none", "clip": 1.0,
                            "model": "small-cnn", "augment": "none", "schedule": "constant",
                            "multiplicity": 1, "eval_every": 1, "eval_noise": 5.0}
RECIPES = [
    {},  # the demo's defaults
    {"optimizer": "sgd", "lr": 0.3, "batch": 128, "rounds": 15, "loss": "logit-adjusted"},
    {"optimizer": "sgd", "lr": 0.3, "batch": 128, "rounds": 15, "loss": "logit-adjusted", "tau": 2.0},
]


def shards(source: Path, sites: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], Any, Any]:
    train, test = load_source(source, split="train"), load_source(source, split="test")
    val = load_source(source, split="val")  # the source's official validation split: for choosing
    out = []
    for i in range(1, sites + 1):
        idx = shard(train.labels, ShardSpec(index=i, count=sites), parse_partition("iid"), seed=0)
        images, labels = train.images[idx], train.labels[idx]
        kept, _ = hash_split(images, val_fraction=0.2, seed=0)
        out.append((images[kept], labels[kept]))
    return out, val, test


def run(recipe: dict[str, Any], seed: int, sites: list[tuple[np.ndarray, np.ndarray]], val: Any, test: Any,
        epsilon: float) -> dict[str, Any]:
    r = {**DEFAULTS, **recipe}
    counts = np.bincount(np.concatenate([y for _, y in sites]), minlength=2).tolist()
    weights = balanced_weights(counts) if r["class_weights"] == "balanced" else ()
    offsets = logit_offsets(counts, tau=r["tau"]) if r["loss"] == "logit-adjusted" else ()
    train = TrainConfig(epochs=r["epochs"], batch_size=r["batch"], optimizer=r["optimizer"], lr=r["lr"],
                        seed=seed, class_weights=weights, logit_adjustment=offsets,
                        augment=r["augment"], lr_schedule=r["schedule"],
                        augment_multiplicity=r["multiplicity"])
    spec = JobSpec(dataset="d", model=r["model"], in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=r["rounds"], train=train)
    task = task_for(spec)
    n = min(len(y) for _, y in sites)
    sigma = r.get("sigma") or noise_multiplier_for(  # a recipe's "sigma" fixes σ (its ε is then not 8)
        DPConfig(target_epsilon=epsilon, delta=1e-5, max_grad_norm=r["clip"],
                 eval_noise_multiplier=r["eval_noise"]), n_samples=n,
        batch_size=r["batch"], epochs_per_call=r["epochs"], training_calls=r["rounds"],
        eval_calls=r["rounds"] // r["eval_every"] + 1)  # the releases the sites' ledgers charge
    started = time.perf_counter()
    global_weights = get_weights(task.build_model(spec))
    for round_number in range(1, r["rounds"] + 1):
        updates = []
        for k, (images, labels) in enumerate(sites):
            model = task.build_model(spec)
            set_weights(model, global_weights)
            config = dataclasses.replace(train.for_round(round_number, r["rounds"]),
                                         seed=seed + 100 * round_number + k)
            dp = DPTraining(noise_multiplier=sigma, max_grad_norm=r["clip"]) if r.get("dp", True) else None
            train_local(model, images, labels, config=config, task=task, dp=dp)
            updates.append((get_weights(model), len(labels)))
        global_weights = fedavg(updates)
    model = task.build_model(spec)
    set_weights(model, global_weights)
    scored = evaluate_model(model, test.images, test.labels)
    chosen_on = evaluate_model(model, val.images, val.labels)
    with torch.no_grad():
        model.eval()
        logits = model(torch.from_numpy(test.images.astype(np.float32) / 255.0))
        val_logits = model(torch.from_numpy(val.images.astype(np.float32) / 255.0))
    margin = (logits[:, 1] - logits[:, 0]).numpy()
    return {"recipe": json.dumps(recipe, sort_keys=True) if recipe else "demo defaults", "seed": seed,
            "sigma": sigma, "val_accuracy": chosen_on.accuracy, "val_auc": chosen_on.auc,
            "val_balanced_accuracy": balanced_accuracy(val_logits.numpy(), val.labels),
            "test_accuracy": scored.accuracy, "test_auc": scored.auc,
            "test_balanced_accuracy": balanced_accuracy(logits.numpy(), test.labels),
            "margin_normal": float(np.median(margin[test.labels == 0])),
            "margin_pneumonia": float(np.median(margin[test.labels == 1])),
            "seconds": time.perf_counter() - started}


def balanced_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the argmax recall: unlike accuracy, it does not reward a threshold
    for leaning to the class a split happens to hold more of. The official validation split has
    the train split's prior (74% pneumonia), the test split 62.5%, so validation accuracy favours
    recipes that lean to pneumonia; this is the prior-free column to choose by.

    >>> round(balanced_accuracy(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]), np.array([0, 0, 1])), 3)
    0.75
    """
    predicted, truth = logits.argmax(axis=1), np.asarray(labels).ravel()
    return float(np.mean([np.mean(predicted[truth == k] == k) for k in np.unique(truth)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--recipe", action="append", type=json.loads, help="JSON over the defaults")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--epsilon", type=float, default=8.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sites, val, test = shards(args.source, args.sites)
    rows = []
    for recipe in args.recipe or RECIPES:
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(run(recipe, seed, sites, val, test, args.epsilon))
            print(json.dumps(rows[-1]), flush=True)
    frame = pd.DataFrame(rows)
    summary = frame.groupby("recipe", sort=False).agg(
        sigma=("sigma", "first"), val_acc=("val_accuracy", "mean"), val_auc=("val_auc", "mean"),
        val_bal=("val_balanced_accuracy", "mean"),
        acc=("test_accuracy", "mean"), acc_sd=("test_accuracy", "std"),
        auc=("test_auc", "mean"), auc_sd=("test_auc", "std"), runs=("seed", "count"))
    with pd.option_context("display.width", 250, "display.max_colwidth", 120,
                           "display.float_format", "{:.3f}".format):
        print(summary.sort_values("val_acc", ascending=False).to_string())


if __name__ == "__main__":
    main()
