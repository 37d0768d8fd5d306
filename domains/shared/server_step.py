"""Server optimizers: one step of FedAvgM, FedAdam or FedYogi from a round's FedAvg mean.

Hsu et al. 2019 (FedAvgM) and Reddi et al. 2021, "Adaptive Federated Optimization" (FedAdam,
FedYogi, their Algorithm 2) treat the change the round's mean ``a`` makes to the previous global
model ``x`` as a pseudo-gradient ``d = a − x`` and feed it to an optimizer on the server:

- FedAvgM: ``v = β·v + d``; ``x' = x + η·v``
- FedAdam: ``m = β1·m + (1−β1)·d``; ``v = β2·v + (1−β2)·d²``; ``x' = x + η·m / (√v + τ)``
- FedYogi: as FedAdam, but ``v = v − (1−β2)·d²·sign(v − d²)``

The moments start at zero. Defaults are Flower's (``flwr/serverapp/strategy/fedavgm.py``,
``fedadam.py``, ``fedyogi.py``): FedAvgM η = 1, β = 0 (which is FedAvg: set ``server_momentum``,
Hsu et al. use 0.9); FedAdam η = 0.1, β1 = 0.9, β2 = 0.99, τ = 1e-3; FedYogi η = 0.01,
β1 = 0.9, β2 = 0.99, τ = 1e-3. Unlike Flower's FedAdam, no bias correction scales η: the step is
the paper's, and FedAdam and FedYogi differ only in ``v``.

One module for both rooms: under HE every datasite applies the step to its own copy of the global
model (:mod:`domains.runtime.site_global`), in plaintext the orchestrator does
(:class:`orchestrator.strategy.ServerOptimizer`). The maths is numpy only, elementwise ``+ − × ÷
√ sign`` in float64, each correctly rounded by IEEE 754, so identical inputs give bit-identical
outputs on every site; the model stays float32, the moments float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, TypeGuard

import numpy as np

from domains.runtime.errors import TrainingError

KINDS = ("fedavgm", "fedadam", "fedyogi")
_NAMES = {"fedavgm": "FedAvgM", "fedadam": "FedAdam", "fedyogi": "FedYogi"}
DEFAULTS: dict[str, dict[str, float]] = {  # Flower's serverapp strategies
    "fedavgm": {"lr": 1.0, "momentum": 0.0},
    "fedadam": {"lr": 0.1, "momentum": 0.9, "beta2": 0.99, "tau": 1e-3},
    "fedyogi": {"lr": 1e-2, "momentum": 0.9, "beta2": 0.99, "tau": 1e-3},
}
ADAPTIVE = ("fedadam", "fedyogi")  # the ones with a second moment (beta2, tau)


@dataclass(frozen=True)
class ServerStep:
    """A server optimizer as approved: its kind and every parameter (η, β or β1, β2, τ).

    ``beta2`` and ``tau`` are None for FedAvgM, which has no second moment.

    >>> ServerStep.of("fedadam", lr=0.05).describe()
    'FedAdam η=0.05, β1=0.9, β2=0.99, τ=0.001'
    """

    kind: str
    lr: float
    momentum: float
    beta2: float | None = None
    tau: float | None = None

    @classmethod
    def of(cls, kind: str, *, lr: float | None = None, momentum: float | None = None,
           beta2: float | None = None, tau: float | None = None) -> ServerStep:
        """The step of *kind* with Flower's default for every parameter not given."""
        if kind not in KINDS:
            raise TrainingError(f"unknown server optimizer {kind!r}; choose one of {list(KINDS)}")
        given = {"lr": lr, "momentum": momentum, "beta2": beta2, "tau": tau}
        values = {**DEFAULTS[kind], **{k: float(v) for k, v in given.items() if v is not None}}
        step = cls(kind=kind, **values)
        step.validate()
        return step

    def validate(self) -> None:
        """Each parameter in its range; the second-moment ones only where they are used."""
        if self.kind not in KINDS:
            raise TrainingError(f"server.kind must be one of {list(KINDS)} (got {self.kind!r})")
        _check("server.lr", self.lr, _real(self.lr) and self.lr > 0, "> 0")
        _check("server.momentum", self.momentum, _real(self.momentum) and 0 <= self.momentum < 1, "in [0, 1)")
        if self.kind not in ADAPTIVE:
            if self.beta2 is not None or self.tau is not None:
                raise TrainingError(f"server.beta2 and server.tau belong to FedAdam and FedYogi; "
                                    f"{self.name} has none (got {self.beta2!r}, {self.tau!r})")
            return
        _check("server.beta2", self.beta2, _real(self.beta2) and 0 <= self.beta2 < 1, "in [0, 1)")
        _check("server.tau", self.tau, _real(self.tau) and self.tau > 0, "> 0")

    @property
    def name(self) -> str:
        return _NAMES.get(self.kind, self.kind)

    def describe(self) -> str:
        """One line for a review: the optimizer and its parameters."""
        if self.kind not in ADAPTIVE:
            return f"{self.name} η={self.lr:g}, β={self.momentum:g}"
        return f"{self.name} η={self.lr:g}, β1={self.momentum:g}, β2={self.beta2:g}, τ={self.tau:g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServerStep:
        try:
            step = cls(**dict(data))
        except (TypeError, ValueError) as exc:
            raise TrainingError(f"the job's server optimizer is malformed ({exc})") from exc
        step.validate()
        return step


@dataclass(frozen=True)
class ServerState:
    """The optimizer's memory between rounds: the momentum (FedAvgM's v, FedAdam's and FedYogi's
    m) and the second moment v; None before the first step (zeros)."""

    momentum: np.ndarray | None = None
    second_moment: np.ndarray | None = None

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The moments as named float64 arrays, for an npz file (none before the first step)."""
        return {k: v for k, v in (("momentum", self.momentum), ("second_moment", self.second_moment))
                if v is not None}

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ServerState:
        """The state of :meth:`to_arrays`; TrainingError for anything else."""
        if not set(arrays) <= {"momentum", "second_moment"}:
            raise TrainingError(f"a server optimizer state holds momentum and second_moment only "
                                f"(got {sorted(arrays)})")
        values = {k: np.asarray(v) for k, v in arrays.items()}
        if any(v.dtype != np.float64 or v.ndim != 1 for v in values.values()) or \
                len({v.size for v in values.values()}) > 1:
            raise TrainingError("a server optimizer state's moments must be 1-D float64 arrays of one length")
        return cls(momentum=values.get("momentum"), second_moment=values.get("second_moment"))


def server_update(step: ServerStep, model: np.ndarray, mean: np.ndarray, state: ServerState
                  ) -> tuple[np.ndarray, ServerState]:
    """The next global model (float32) and optimizer state, from the previous model and the round's mean.

    >>> step = ServerStep.of("fedavgm", lr=1.0, momentum=0.5)
    >>> mean = np.array([1.0, -2.0], np.float32)
    >>> x, state = server_update(step, np.zeros(2, np.float32), mean, ServerState())
    >>> x.tolist(), state.momentum.tolist()
    ([1.0, -2.0], [1.0, -2.0])
    >>> server_update(step, x, x, state)[0].tolist()  # no change this round, but the momentum carries on
    [1.5, -3.0]
    """
    x = _vector("the global model", model)
    delta = _vector("the round's mean", mean, size=x.size).astype(np.float64) - x.astype(np.float64)
    zeros = np.zeros(x.size, dtype=np.float64)
    m = _moment(state.momentum, zeros)
    if step.kind == "fedavgm":
        v = step.momentum * m + delta
        return (x.astype(np.float64) + step.lr * v).astype(np.float32), ServerState(momentum=v)
    assert step.beta2 is not None and step.tau is not None  # validated: adaptive steps have both
    m = step.momentum * m + (1.0 - step.momentum) * delta
    v, squared = _moment(state.second_moment, zeros), delta * delta
    if step.kind == "fedadam":
        v = step.beta2 * v + (1.0 - step.beta2) * squared
    else:  # fedyogi: v moves towards d² by (1 − β2)·d² at most, whatever the size of d²
        v = v - (1.0 - step.beta2) * squared * np.sign(v - squared)
    new = x.astype(np.float64) + step.lr * m / (np.sqrt(v) + step.tau)
    return new.astype(np.float32), ServerState(momentum=m, second_moment=v)


def _vector(what: str, values: np.ndarray, *, size: int | None = None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype != np.float32 or (size is not None and array.size != size):
        raise TrainingError(f"{what} must be one float32 vector{f' of {size} values' if size else ''} "
                            f"(got {array.dtype} with shape {array.shape})")
    return array


def _moment(stored: np.ndarray | None, zeros: np.ndarray) -> np.ndarray:
    if stored is None:
        return zeros
    if stored.shape != zeros.shape:
        raise TrainingError(f"the server optimizer's state has {stored.size} values but the model "
                            f"{zeros.size}: it belongs to another model")
    return stored


def _real(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check(name: str, value: object, ok: bool, rule: str) -> None:
    if not ok:
        raise TrainingError(f"{name} must be a finite number {rule} (got {value!r})")
