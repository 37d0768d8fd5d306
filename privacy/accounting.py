"""Differential-privacy accounting for DP-SGD training and noisy evaluation releases.

A *history* is a list of ``(noise_multiplier, sample_rate, steps)`` tuples, exactly
the format of Opacus's accountants, so a datasite's ledger, a job's plan and
Opacus's own :class:`~opacus.accountants.RDPAccountant` all speak one language.
Composition across calls and jobs on one dataset is concatenation: ε of the
concatenated history, which for RDP is tighter than summing per-job ε.

Opacus is imported lazily (it pulls in torch, seconds), so that a command-line
tool that only reads a ledger stays quick.

ε of a DP-SGD schedule: 16 epochs over 800 images in batches of 64 at noise σ = 1.0, at δ = 1e-5:

>>> round(epsilon([training_entry(noise_multiplier=1.0, n_samples=800, batch_size=64, epochs=16)],
...               delta=1e-5), 2)
8.52

What a whole job may spend on one dataset: 8 rounds of 2 local epochs, each round followed by one
noisy evaluation release (what a datasite checks against the dataset's budget at approval):

>>> history = job_history(DPConfig(noise_multiplier=1.0), n_samples=800, batch_size=64,
...                       epochs_per_call=2, training_calls=8, eval_calls=8)
>>> len(history), round(epsilon(history, delta=1e-5), 2)
(16, 8.55)
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from privacy.errors import DPConfigError

HistoryEntry = tuple[float, float, int]
History = Sequence[HistoryEntry]

ACCOUNTANTS = ("rdp", "prv")
DEFAULT_EVAL_NOISE_MULTIPLIER = 20.0
PRV_EPS_ERROR = 0.01  # absolute error PRV may make on ε; it returns the upper bound
MAX_NOISE_MULTIPLIER = 1e6
_SIGMA_REL_TOLERANCE = 1e-3


@dataclass(frozen=True)
class DPConfig:
    """DP-SGD settings of one job: give either the noise or the ε it must stay within."""

    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    accountant: str = "rdp"
    eval_noise_multiplier: float = DEFAULT_EVAL_NOISE_MULTIPLIER

    def validate(self) -> None:
        """Raise :class:`DPConfigError` naming the first broken rule."""
        if (self.noise_multiplier is None) == (self.target_epsilon is None):
            raise DPConfigError(
                "give exactly one of noise_multiplier and target_epsilon "
                f"(got noise_multiplier={self.noise_multiplier}, target_epsilon={self.target_epsilon})"
            )
        if self.noise_multiplier is not None:
            _check_positive("noise_multiplier", self.noise_multiplier)
        if self.target_epsilon is not None:
            _check_positive("target_epsilon", self.target_epsilon)
        _check_positive("max_grad_norm", self.max_grad_norm)
        _check_positive("eval_noise_multiplier", self.eval_noise_multiplier)
        _check_delta(self.delta)
        _check_accountant(self.accountant)


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
        raise DPConfigError(f"{name} must be a finite number > 0 (got {value!r})")


def _check_delta(delta: float) -> None:
    if not (isinstance(delta, numbers.Real) and 0.0 < delta < 1.0):
        raise DPConfigError(f"delta must be in (0, 1) (got {delta!r})")


def _check_accountant(accountant: str) -> None:
    if accountant not in ACCOUNTANTS:
        raise DPConfigError(f"accountant must be one of {', '.join(ACCOUNTANTS)} (got {accountant!r})")


def _check_count(name: str, value: int, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DPConfigError(f"{name} must be an integer >= {minimum} (got {value!r})")


def steps_per_epoch(*, n_samples: int, batch_size: int) -> int:
    """Optimizer steps in one epoch: ``len(DataLoader)``, the last batch possibly short."""
    _check_count("n_samples", n_samples)
    _check_count("batch_size", batch_size)
    return math.ceil(n_samples / batch_size)


def sample_rate(*, n_samples: int, batch_size: int) -> float:
    """Poisson sampling rate Opacus uses for a loader: ``1 / len(DataLoader)``."""
    return 1.0 / steps_per_epoch(n_samples=n_samples, batch_size=batch_size)


def training_entry(*, noise_multiplier: float, n_samples: int, batch_size: int, epochs: int) -> HistoryEntry:
    """The history entry of one call's DP-SGD: ``epochs`` passes at Poisson rate q.

    800 samples in batches of 64 are 13 steps an epoch (q = 1/13), so 16 epochs are 208 steps:

    >>> training_entry(noise_multiplier=1.0, n_samples=800, batch_size=64, epochs=16)
    (1.0, 0.07692307692307693, 208)
    """
    _check_positive("noise_multiplier", noise_multiplier)
    _check_count("epochs", epochs)
    steps = steps_per_epoch(n_samples=n_samples, batch_size=batch_size) * epochs
    return (float(noise_multiplier), sample_rate(n_samples=n_samples, batch_size=batch_size), steps)


def eval_entry(*, eval_noise_multiplier: float = DEFAULT_EVAL_NOISE_MULTIPLIER) -> HistoryEntry:
    """One Gaussian release of evaluation counts, noise σ_eval × L2 sensitivity.

    A Gaussian mechanism with sensitivity-normalised noise σ has the same RDP curve
    as one DP-SGD step at sample rate 1, so it composes with training as an entry.
    """
    _check_positive("eval_noise_multiplier", eval_noise_multiplier)
    return (float(eval_noise_multiplier), 1.0, 1)


def compact(history: History) -> list[HistoryEntry]:
    """Merge entries of the same (σ, q) by adding their steps; ε does not change.

    Composition is commutative and k-fold self-composition is what ``steps`` means,
    so this is exact, and it keeps a long ledger as cheap to account as one job.
    """
    merged: dict[tuple[float, float], int] = {}
    for entry in history:
        sigma, q, steps = _checked_entry(entry)
        if steps:
            merged[(sigma, q)] = merged.get((sigma, q), 0) + steps
    return [(sigma, q, steps) for (sigma, q), steps in merged.items()]


def _checked_entry(entry: Any) -> HistoryEntry:
    try:
        sigma, q, steps = entry
    except (TypeError, ValueError) as exc:
        raise DPConfigError(
            f"a history entry must be (noise_multiplier, sample_rate, steps) (got {entry!r})"
        ) from exc
    _check_positive("noise_multiplier", sigma)
    if not (isinstance(q, numbers.Real) and 0.0 < float(q) <= 1.0):
        raise DPConfigError(f"sample_rate must be in (0, 1] (got {q!r})")
    _check_count("steps", steps, minimum=0)
    return (float(sigma), float(q), int(steps))


def epsilon(history: History, *, delta: float, accountant: str = "rdp") -> float:
    """ε spent by *history* at *delta* (0.0 for an empty history).

    Two runs of the schedule in the module docstring compose to less than twice its ε:

    >>> entry = training_entry(noise_multiplier=1.0, n_samples=800, batch_size=64, epochs=16)
    >>> round(epsilon([entry], delta=1e-5), 2), round(epsilon([entry, entry], delta=1e-5), 2)
    (8.52, 12.11)
    >>> epsilon([], delta=1e-5)
    0.0
    """
    _check_delta(delta)
    _check_accountant(accountant)
    entries = compact(history)
    if not entries:
        return 0.0
    return _rdp_epsilon(entries, delta) if accountant == "rdp" else _prv_epsilon(entries, delta)


def _rdp_epsilon(entries: list[HistoryEntry], delta: float) -> float:
    """What ``RDPAccountant.get_epsilon`` computes, with each (σ, q) curve computed once."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as analysis

    rdp = sum(steps * _rdp_curve(sigma, q) for sigma, q, steps in entries)
    with warnings.catch_warnings():
        # "optimal order is the largest alpha": the bound is still valid, only not the tightest
        warnings.simplefilter("ignore", UserWarning)
        eps, _ = analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
    return float(eps)


@functools.lru_cache(maxsize=1024)
def _rdp_curve(sigma: float, q: float) -> Any:
    """RDP of one step at every default order; the fractional-q series takes ~0.1 s."""
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as analysis

    return analysis.compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS)


def _prv_epsilon(entries: list[HistoryEntry], delta: float) -> float:
    """Opacus's PRV upper bound on ε (numerical composition, tighter than RDP)."""
    import numpy as np
    from opacus.accountants import PRVAccountant

    accountant = PRVAccountant()
    accountant.history = list(entries)
    # log(1 - q) at q = 1 is -inf, which PRV handles; its RDP-based domain bound may warn as above
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(delta, eps_error=PRV_EPS_ERROR))


def noise_for_target(
    *,
    target_epsilon: float,
    delta: float,
    n_samples: int,
    batch_size: int,
    epochs_total: int,
    accountant: str = "rdp",
    eval_entries: int = 0,
    eval_noise_multiplier: float = DEFAULT_EVAL_NOISE_MULTIPLIER,
) -> float:
    """Smallest σ (to 0.1 %) whose training plus *eval_entries* releases stay within ε.

    Unlike ``opacus.accountants.utils.get_noise_multiplier`` this counts the
    evaluation releases too, so the whole job, not only its training, meets the target.
    """
    _check_positive("target_epsilon", target_epsilon)
    _check_count("eval_entries", eval_entries, minimum=0)
    evals = [eval_entry(eval_noise_multiplier=eval_noise_multiplier)] * eval_entries
    floor = epsilon(evals, delta=delta, accountant=accountant)
    if floor >= target_epsilon:
        raise DPConfigError(
            f"the {eval_entries} evaluation releases alone spend ε={floor:.3g} >= target_epsilon="
            f"{target_epsilon}; raise eval_noise_multiplier or target_epsilon"
        )

    def eps_at(sigma: float) -> float:
        train = training_entry(noise_multiplier=sigma, n_samples=n_samples, batch_size=batch_size,
                               epochs=epochs_total)
        return epsilon([train, *evals], delta=delta, accountant=accountant)

    return _bisect_sigma(eps_at, target_epsilon)


def _bisect_sigma(eps_at: Any, target: float) -> float:
    """ε falls as σ grows: bracket the target by doubling, then halve the bracket."""
    low, high = 0.0, 1.0
    while eps_at(high) > target:
        low, high = high, 2 * high
        if high > MAX_NOISE_MULTIPLIER:
            raise DPConfigError(f"target_epsilon={target} cannot be met with any noise_multiplier")
    while high - low > _SIGMA_REL_TOLERANCE * high:
        mid = (low + high) / 2
        low, high = (low, mid) if eps_at(mid) <= target else (mid, high)
    return high


def noise_multiplier_for(
    config: DPConfig, *, n_samples: int, batch_size: int, epochs_per_call: int,
    training_calls: int, eval_calls: int,
) -> float:
    """The σ a job trains with: the configured one, or the one its target ε allows."""
    config.validate()
    if config.noise_multiplier is not None:
        return float(config.noise_multiplier)
    assert config.target_epsilon is not None  # validate() guarantees exactly one
    return noise_for_target(
        target_epsilon=config.target_epsilon, delta=config.delta, n_samples=n_samples,
        batch_size=batch_size, epochs_total=epochs_per_call * training_calls,
        accountant=config.accountant, eval_entries=eval_calls,
        eval_noise_multiplier=config.eval_noise_multiplier,
    )


def job_history(
    config: DPConfig, *, n_samples: int, batch_size: int, epochs_per_call: int,
    training_calls: int, eval_calls: int,
) -> list[HistoryEntry]:
    """Everything one job may release on one dataset: its training calls, then its evaluations."""
    _check_count("training_calls", training_calls, minimum=0)
    _check_count("eval_calls", eval_calls, minimum=0)
    evals = [eval_entry(eval_noise_multiplier=config.eval_noise_multiplier)] * eval_calls
    if training_calls == 0:
        config.validate()
        return evals
    sigma = noise_multiplier_for(config, n_samples=n_samples, batch_size=batch_size,
                                 epochs_per_call=epochs_per_call, training_calls=training_calls,
                                 eval_calls=eval_calls)
    train = training_entry(noise_multiplier=sigma, n_samples=n_samples, batch_size=batch_size,
                           epochs=epochs_per_call)
    return [train] * training_calls + evals
