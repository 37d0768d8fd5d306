"""Training code a hospital runs on its own data, shared with the orchestrator that plans it.

- models: :func:`build_model`, :func:`register_model`, :func:`available_models`,
  :func:`default_model` - named networks, all ready for DP-SGD (GroupNorm, no in-place ops)
- weights: :data:`Weights`, :func:`get_weights`, :func:`set_weights`, :func:`fedavg`,
  :func:`flatten`, :func:`unflatten`, :func:`layout_of`, :func:`load_plain`,
  :func:`weights_nbytes` - plain numpy state that travels (as a ``domains.shared.PlainModel``)
- local: :class:`TrainConfig`, :class:`LocalResult`, :func:`train_local`, :func:`to_tensor_images`
- evaluate: :class:`EvalResult`, :func:`pool`, :func:`histogram_auc`, :data:`BINS`; the
  function ``evaluate`` is imported from :mod:`domains.training.evaluate` (at package level
  that name is the submodule, whatever the import order)
- split: :func:`train_val_split`
- server_step: :class:`ServerStep`, :class:`ServerState`, :func:`server_update` - FedAvgM, FedAdam,
  FedYogi, the one step both the orchestrator (plaintext) and every site (under HE) take
- errors: :class:`TrainingError`, :class:`TrainConfigError`, :class:`UnknownModel`

Names are imported on first use: torch, MONAI and Opacus take seconds to load, and the CLI
imports ``domains.training.errors`` on every command. Lazy loading is also why the function
``evaluate`` is not re-exported: Python binds the package attribute ``evaluate`` to the
submodule whenever that is first imported, so a re-export would flip with import order.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from domains.training.errors import TrainConfigError, TrainingError, UnknownModel
    from domains.training.evaluate import BINS, EvalResult, histogram_auc, pool
    from domains.training.local import OPTIMIZERS, LocalResult, TrainConfig, to_tensor_images, train_local
    from domains.training.models import available_models, build_model, default_model, register_model
    from domains.training.server_step import ServerState, ServerStep, server_update
    from domains.training.split import train_val_split
    from domains.training.weights import (
        Layout,
        Weights,
        fedavg,
        flatten,
        get_weights,
        layout_of,
        load_plain,
        set_weights,
        unflatten,
        weights_nbytes,
    )

_MODULES = {
    "errors": ["TrainConfigError", "TrainingError", "UnknownModel"],
    "evaluate": ["BINS", "EvalResult", "histogram_auc", "pool"],
    "local": ["OPTIMIZERS", "LocalResult", "TrainConfig", "to_tensor_images", "train_local"],
    "models": ["available_models", "build_model", "default_model", "register_model"],
    "server_step": ["ServerState", "ServerStep", "server_update"],
    "split": ["train_val_split"],
    "weights": [
        "Layout", "Weights", "fedavg", "flatten", "get_weights", "layout_of", "load_plain", "set_weights",
        "unflatten", "weights_nbytes",
    ],
}
_EXPORTS = {name: f"domains.training.{module}" for module, names in _MODULES.items() for name in names}

__all__ = [
    "BINS",
    "OPTIMIZERS",
    "EvalResult",
    "Layout",
    "LocalResult",
    "ServerState",
    "ServerStep",
    "TrainConfig",
    "TrainConfigError",
    "TrainingError",
    "UnknownModel",
    "Weights",
    "available_models",
    "build_model",
    "default_model",
    "fedavg",
    "flatten",
    "get_weights",
    "histogram_auc",
    "layout_of",
    "load_plain",
    "pool",
    "register_model",
    "server_update",
    "set_weights",
    "to_tensor_images",
    "train_local",
    "train_val_split",
    "unflatten",
    "weights_nbytes",
]


def __getattr__(name: str) -> Any:
    if name == "evaluate":  # the submodule; see the module docstring
        return importlib.import_module("domains.training.evaluate")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'domains.training' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return __all__
