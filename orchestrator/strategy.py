"""How a round picks its sites and combines their updates.

As in Flower: :class:`Strategy` owns the decisions a round needs (which sites,
how to aggregate) and :class:`FedAvg` fills in the aggregation. Privacy layers
(encrypted aggregation, next issue) wrap a strategy rather than subclass it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from domains.training.weights import Weights, fedavg


class Strategy(ABC):
    """Site selection and aggregation for one federated job."""

    def __init__(self, *, fraction: float = 1.0, min_sites: int = 1, seed: int = 0) -> None:
        self.fraction = fraction
        self.min_sites = min_sites
        self.seed = seed

    def select(self, round_number: int, sites: Sequence[str]) -> list[str]:
        """A seeded share of *sites* (at least ``min_sites``) for this round."""
        k = min(len(sites), max(self.min_sites, math.ceil(self.fraction * len(sites))))
        if k == len(sites):
            return list(sites)
        rng = np.random.default_rng([self.seed, round_number])
        chosen = set(rng.choice(len(sites), size=k, replace=False).tolist())
        return [s for i, s in enumerate(sites) if i in chosen]

    @abstractmethod
    def aggregate(self, updates: Sequence[tuple[Weights, int]]) -> Weights:
        """Combine (weights, sample count) pairs into the next global model."""


class FedAvg(Strategy):
    """McMahan et al. 2017: the sample-count weighted mean of the site models."""

    def aggregate(self, updates: Sequence[tuple[Weights, int]]) -> Weights:
        return fedavg(updates)
