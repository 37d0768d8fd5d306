"""Encrypted aggregation: a strategy wrapper under which the orchestrator only adds ciphertexts.

As in Flower, privacy wraps a strategy rather than subclassing it:
:class:`SecureAggregation` keeps the wrapped strategy's site selection and quorum, and
replaces its aggregation by homomorphic addition. Each site encrypts its model already
multiplied by its FedAvg share ``n_i / Σ n`` (shares come from the public dataset sizes),
so the sum of the ciphertexts that arrive is the encrypted weighted mean up to the
factor ``weight_sum``, which the sites divide out after decrypting. A site that fails
simply contributes nothing: the mean is over the sites that succeeded.

The orchestrator's context holds no secret key (``privacy.he``): it can add but never
decrypt, and the global model travels back to the sites encrypted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.strategy import FedAvg, Strategy
from privacy.he import EncryptedVector, HEContext


class SecureAggregation:
    """Wraps a FedAvg strategy; aggregation by adding pre-weighted ciphertexts."""

    def __init__(self, strategy: Strategy, context: HEContext) -> None:
        if not isinstance(strategy, FedAvg):
            raise TypeError("encrypted aggregation can only compute a weighted mean: wrap a FedAvg strategy")
        self.strategy = strategy
        self.context = context

    @property
    def min_sites(self) -> int:
        return self.strategy.min_sites

    @property
    def key_id(self) -> str:
        return self.context.key_id

    def select(self, round_number: int, sites: Sequence[str]) -> list[str]:
        return self.strategy.select(round_number, sites)

    @staticmethod
    def shares(names: Sequence[str], sizes: Mapping[str, int]) -> dict[str, float]:
        """Each asked site's FedAvg weight; they sum to 1, so encrypted sums cannot wrap."""
        total = sum(sizes[n] for n in names)
        return {n: sizes[n] / total for n in names}

    def aggregate(self, updates: Sequence[Mapping[str, Any]]) -> EncryptedVector:
        """Add the sites' encrypted updates (their ``to_dict`` form) into the next global model."""
        return self.context.aggregate([EncryptedVector.from_dict(u) for u in updates])
