"""Named training recipes: what was measured to work, as ``[job]`` defaults a scientist names.

``[job] recipe = "dp-logit-adjusted"`` fills in every ``[job]`` key the recipe sets that the file
does not set itself (a key in the file always wins), so a job reuses a measured recipe without
copying its numbers. The recipe's name stays in the config (``JobConfig.recipe``).

Each recipe says what it was measured on; ``docs/training.md`` has the tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recipe:
    """``[job]`` values and the measurement behind them."""

    values: dict[str, Any]
    measured: str


RECIPES: dict[str, Recipe] = {
    "dp-logit-adjusted": Recipe(
        values={"model": "small-cnn", "optimizer": "sgd", "lr": 0.5, "lr_schedule": "cosine",
                "batch_size": 256, "rounds": 15, "local_epochs": 2, "loss": "logit-adjusted",
                "logit_tau": 2.0, "class_weights": "balanced"},
        measured="DP-SGD at ε = 8 per hospital under HE, PneumoniaMNIST 28 px over 3 IID hospitals "
                 "(the demo): test ACC 0.845 ± 0.006, AUC 0.918 ± 0.006 over 5 runs (benchmarks/recipes.py, "
                 "2026-12-04), where the demo's defaults predict the common class (0.625); chosen on the "
                 "official validation split's balanced accuracy (benchmarks/dp_recipe_sweep.py)"),
    "plain-augmented": Recipe(
        values={"model": "small-cnn", "optimizer": "sgd", "lr": 0.03, "batch_size": 64, "rounds": 25,
                "local_epochs": 2, "loss": "logit-adjusted", "logit_tau": 0.4, "class_weights": "none",
                "augment": "affine", "lr_schedule": "cosine"},
        measured="without DP or HE, PneumoniaMNIST 28 px over 3 IID hospitals (the demo, --no-dp --no-he): "
                 "test ACC 0.890 ± 0.004, AUC 0.952 ± 0.003 over 3 seeds (benchmarks/recipes.py); "
                 "chosen on the source's official validation split (benchmarks/dp_recipe_sweep.py)"),
}


def recipe_defaults(name: str) -> dict[str, Any]:
    """The ``[job]`` values of recipe *name*; ValueError naming the known ones otherwise.

    >>> recipe_defaults("dp-logit-adjusted")["loss"]
    'logit-adjusted'
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(sorted(RECIPES))}")
    return dict(RECIPES[name].values)
