"""The round protocol: which sites a call asks, what each receives, how results become the next model.

As in Flower's ``serverapp/strategy``: a :class:`Strategy` owns a round's workflow and the loop
(:mod:`orchestrator.runner`) only drives it, records it and checkpoints it, never asking which
kind of strategy it holds. One call of the loop is:

1. :meth:`Strategy.select` the sites of round r (the final evaluation call asks them all);
2. :meth:`Strategy.configure` one payload per selected site; the :class:`~orchestrator.transport.
   Transport` sends them in parallel;
3. :meth:`Strategy.accept` the outcomes: a strategy may turn a result it would refuse into that
   site's failure, named;
4. if fewer than :meth:`Strategy.quorum` sites succeeded the job stops (the loop checkpoints
   round r−1 first); otherwise :meth:`Strategy.next_model` turns the results into the next global
   model, asking the transport again if it must (mask recovery), or raising
   :class:`~orchestrator.errors.RoundFailed`.

:class:`FedAvg` is the plaintext weighted mean (a :class:`PlaintextStrategy`: one that combines
models it can read). Privacy wraps a strategy instead of subclassing
it: :class:`orchestrator.secure.SecureAggregation` is a strategy that forwards selection to the
one it wraps and replaces what travels and how it is added.

A strategy may carry state from round to round beyond the global model (a server optimizer's
moments): :meth:`Strategy.state` returns it and :meth:`Strategy.restore` takes it back; the loop
checkpoints it beside each round's global model, so a resumed run continues exactly.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from domains import Weights, check_same_layout, fedavg
from domains.shared.codec import decode_update, to_wire
from domains.shared.errors import CodecError
from domains.shared.plain_model import Layout, PlainModel
from domains.shared.server_step import ServerState, ServerStep, server_update
from orchestrator.errors import ConfigError
from privacy.errors import PrivacyError

if TYPE_CHECKING:
    from orchestrator.transport import CallOutcome, Transport

@dataclass(frozen=True)
class JobContext:
    """What a strategy may know of the job it runs: all of it public, fixed at submission."""

    job_id: str
    rounds: int
    sizes: Mapping[str, int]  # each site's public training-split size (FedAvg shares)
    server_names: Mapping[str, str] = field(default_factory=dict)  # site -> its roster name
    min_contributions: int = 1

    def server_name(self, site: str) -> str:
        return self.server_names.get(site, site)


@dataclass
class NextModel:
    """A round's outcome: the next global model, its parameter count, and what to record."""

    model: Any  # orchestrator.checkpoint.GlobalModel
    params: int
    stats: dict[str, Any] = field(default_factory=dict)  # extra columns of the round's timing row


class Strategy(ABC):
    """Site selection and the round workflow of one federated job."""

    update_type: type = object  # what a result's update must decode to for this strategy to use it

    def __init__(self, *, fraction: float = 1.0, min_sites: int = 1, seed: int = 0) -> None:
        self.fraction = fraction
        self.min_sites = min_sites
        self.seed = seed
        self._job: JobContext | None = None
        self._layout: Layout | None = None  # of the plaintext model last sent: reads a bare-vector reply

    # -- the job ----------------------------------------------------------------------------
    def bind(self, job: JobContext) -> None:
        """Called by the loop before the first call: the job this strategy now runs."""
        self._job = job

    @property
    def job(self) -> JobContext:
        if self._job is None:
            raise RuntimeError("the strategy is not bound to a job: Federation binds it before a round")
        return self._job

    # -- one call ---------------------------------------------------------------------------
    def select(self, round_number: int, sites: Sequence[str]) -> list[str]:
        """A seeded share of *sites* (at least ``min_sites``) for this round."""
        k = min(len(sites), max(self.min_sites, math.ceil(self.fraction * len(sites))))
        if k == len(sites):
            return list(sites)
        rng = np.random.default_rng([self.seed, round_number])
        chosen = set(rng.choice(len(sites), size=k, replace=False).tolist())
        return [s for i, s in enumerate(sites) if i in chosen]

    def quorum(self) -> int:
        """Sites that must succeed for a round to count."""
        return self.min_sites

    def configure(self, call: int, sites: Sequence[str], model: Any) -> dict[str, dict[str, Any]]:
        """Each asked site's payload for *call* (call R+1 only evaluates *model*).

        Calls run in order on every site: the calls before this one that a site was not asked
        (or did not finish) are given up explicitly, and can then never run there.
        """
        base = {"call": call, "weights": self.encode(model), "skipped": list(range(1, call))}
        return {n: dict(base) for n in sites}

    def encode(self, model: Any) -> Any:
        """The global model as it travels: the codec's wire form (:mod:`domains.shared.codec`), one
        float32 vector with its layout, which PySyft serializes far faster than a dict of arrays."""
        if isinstance(model, Mapping):  # named arrays, as a caller may hand the initial model
            model = PlainModel.from_weights(model)
        self._layout = model.layout if isinstance(model, PlainModel) else None
        return None if model is None else to_wire(model)

    def accept(self, call: int, sites: Sequence[str], outcomes: Sequence[CallOutcome]) -> None:
        """Decode each result's update once, keeping it on the outcome (``value``), and check it
        before it counts: one that cannot be read, or is not what this strategy combines, becomes
        its site's failure, named. Plaintext strategies accept every readable model as it came
        (the sites ran approved code)."""
        for o in outcomes:
            if o.status != "ok":
                continue
            try:
                o.value = decode_update(o.result, layout=self._layout)
            except (CodecError, PrivacyError) as exc:
                refuse(o, f"its update cannot be read: {exc}", exc)
                continue
            if o.value is not None and not isinstance(o.value, self.update_type):
                refuse(o, f"its update is a {type(o.value).__name__}, not the {self.update_type.__name__} "
                          "this job combines")

    @abstractmethod
    def next_model(self, call: int, sites: Sequence[str], ok: Sequence[CallOutcome], model: Any,
                   transport: Transport) -> NextModel:
        """The global model after *call*, from the successful sites' results (*ok*, at least a
        quorum of them); *model* is the one they were sent."""

    # -- what survives a resume ------------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """What this strategy carries into the next round besides the global model (none here)."""
        return {}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        """Take back :meth:`state` as checkpointed after the round a resumed run starts from."""
        if state:
            raise ConfigError(f"the run's checkpoint holds a strategy state ({', '.join(sorted(state))}) but "
                              f"{type(self).__name__} keeps none: resume with the job's original strategy")


class PlaintextStrategy(Strategy):
    """A strategy that sees the sites' models and combines them in the clear (no HE)."""

    update_type = PlainModel

    def next_model(self, call: int, sites: Sequence[str], ok: Sequence[CallOutcome], model: Any,
                   transport: Transport) -> NextModel:
        """The combination (:meth:`aggregate`) of the successful sites' models and sample counts."""
        combined = PlainModel.from_weights(self.aggregate([(o.value.to_weights(), int(o.result["n_train"]))
                                                           for o in ok]))
        return NextModel(combined, combined.params)

    @abstractmethod
    def aggregate(self, updates: Sequence[tuple[Weights, int]]) -> Weights:
        """Combine (weights, sample count) pairs into the next global model."""


class FedAvg(PlaintextStrategy):
    """McMahan et al. 2017: the sample-count weighted mean of the site models."""

    def aggregate(self, updates: Sequence[tuple[Weights, int]]) -> Weights:
        return fedavg(updates)


class FedProx(FedAvg):
    """Li et al. 2020: FedAvg's aggregation; each site adds (μ/2)·||w − w_global||² to its loss.

    The proximal term lives in the sites' local training (a job constant the review shows); the
    orchestrator's part is FedAvg's, so FedProx runs under encrypted aggregation too.
    """

    def __init__(self, *, proximal_mu: float, fraction: float = 1.0, min_sites: int = 1,
                 seed: int = 0) -> None:
        if not (isinstance(proximal_mu, int | float) and math.isfinite(proximal_mu) and proximal_mu > 0):
            raise ValueError(f"FedProx needs a proximal term mu > 0 (got {proximal_mu!r})")
        super().__init__(fraction=fraction, min_sites=min_sites, seed=seed)
        self.proximal_mu = float(proximal_mu)


class ServerOptimizer(FedAvg):
    """FedAvgM, FedAdam or FedYogi (:mod:`domains.shared.server_step`): FedAvg's mean, then a step.

    In plaintext the orchestrator takes the step, here. Under HE it cannot (it never sees the
    mean), so :class:`~orchestrator.secure.SecureAggregation` adds as for FedAvg and every site
    takes the step itself (the job constant's ``server``); then every round must ask every site.
    """

    def __init__(self, step: ServerStep, *, fraction: float = 1.0, min_sites: int = 1, seed: int = 0) -> None:
        step.validate()
        super().__init__(fraction=fraction, min_sites=min_sites, seed=seed)
        self.step = step
        self._state = ServerState()

    def next_model(self, call: int, sites: Sequence[str], ok: Sequence[CallOutcome], model: Any,
                   transport: Transport) -> NextModel:
        mean = super().next_model(call, sites, ok, model, transport)
        stepped, self._state = server_update(self.step, model.vector, mean.model.vector, self._state)
        return NextModel(PlainModel(stepped, model.layout), mean.params, mean.stats)

    def state(self) -> dict[str, np.ndarray]:
        arrays = self._state.to_arrays()
        return {**arrays, "kind": np.array(self.step.kind)} if arrays else {}

    def restore(self, state: Mapping[str, np.ndarray]) -> None:
        arrays = dict(state)
        kind = str(arrays.pop("kind", ""))
        if kind != self.step.kind:
            found = f"{kind}'s" if kind else "no"
            raise ConfigError(f"the run's checkpoint holds {found} server optimizer state, but the job's "
                              f"strategy is {self.step.kind}: resume with the strategy the run started with")
        self._state = ServerState.from_arrays(arrays)


def refuse(outcome: CallOutcome, why: str, exc: BaseException | None = None) -> None:
    """Turn a returned result into its site's failure, with the reason (and a refusal's rule)."""
    rule = getattr(exc, "rule", None)
    outcome.status, outcome.error = "error", f"{why} [rule {rule}]" if rule else why


def _stacked(updates: Sequence[tuple[Weights, int]]) -> dict[str, np.ndarray]:
    """Each key's site models stacked on a new first axis (float64, for exact order statistics)."""
    if not updates:
        raise ValueError("no updates to aggregate")
    first = updates[0][0]
    for i, (w, _) in enumerate(updates[1:], start=1):
        check_same_layout(first, w, i)  # as fedavg checks
    return {k: np.stack([np.asarray(w[k], np.float64) for w, _ in updates]) for k in first}


class FedMedian(PlaintextStrategy):
    """Yin et al. 2018: the coordinate-wise median of the site models (unweighted).

    Robust to a minority of sites sending arbitrary models, at the price of ignoring dataset
    sizes. It needs the models in the clear: job.toml refuses it with HE on.

    >>> import numpy as np
    >>> ups = [({"w": np.array([1.0, 10.0])}, 5), ({"w": np.array([2.0, -3.0])}, 1),
    ...        ({"w": np.array([100.0, 0.0])}, 1)]
    >>> FedMedian().aggregate(ups)["w"]
    array([2., 0.], dtype=float32)
    """

    def aggregate(self, updates: Sequence[tuple[Weights, int]]) -> Weights:
        return {k: np.median(v, axis=0).astype(np.float32) for k, v in _stacked(updates).items()}


class TrimmedMean(PlaintextStrategy):
    """Yin et al. 2018, as Flower's FedTrimmedAvg: per coordinate, drop the ``int(beta·n)`` largest
    and smallest of the n site values and average the rest (unweighted).

    With three sites and the default ``beta = 0.2`` nothing is cut (``int(0.6) = 0``): it takes
    five sites to trim one value at each end. Needs plaintext models, like :class:`FedMedian`.

    >>> import numpy as np
    >>> ups = [({"w": np.array([v])}, 1) for v in (0.0, 1.0, 2.0, 3.0, 1000.0)]
    >>> TrimmedMean(beta=0.2).aggregate(ups)["w"]
    array([2.], dtype=float32)
    """

    def __init__(self, *, beta: float = 0.2, fraction: float = 1.0, min_sites: int = 1,
                 seed: int = 0) -> None:
        if not (isinstance(beta, int | float) and 0 <= beta < 0.5):
            raise ValueError(f"the trimmed share beta must be in [0, 0.5) (got {beta!r})")
        super().__init__(fraction=fraction, min_sites=min_sites, seed=seed)
        self.beta = float(beta)

    def aggregate(self, updates: Sequence[tuple[Weights, int]]) -> Weights:
        cut = int(self.beta * len(updates))
        out = {}
        for k, v in _stacked(updates).items():
            ordered = np.sort(v, axis=0)
            out[k] = ordered[cut:len(updates) - cut].mean(axis=0).astype(np.float32)
        return out
