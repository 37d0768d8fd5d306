"""A roster job's global model after one call: the sites' signed parts and any mask recoveries.

Under verifiable secure aggregation the orchestrator adds nothing: the global model it holds,
checkpoints and forwards is this value, and every site of the next call verifies and adds the
parts itself (:mod:`privacy.secagg`). It lives here, not in ``orchestrator/``, because datasites
and the codec read it too, and ``domains/`` never imports the orchestrator's room
(``orchestrator.secure`` re-exports it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from privacy.secagg_messages import MaskRecovery, SignedPart


@dataclass(frozen=True)
class SignedRound:
    """A roster job's global model after call ``call``: the sites' signed parts and recoveries."""

    call: int
    parts: tuple[SignedPart, ...]
    recoveries: tuple[MaskRecovery, ...] = ()

    @property
    def sites(self) -> tuple[str, ...]:
        """The datasite names whose parts it holds (the survivors of the call)."""
        return tuple(p.site for p in self.parts)

    @property
    def nbytes(self) -> int:
        """What one site downloads to verify it: every part's ciphertext."""
        return sum(p.vector.nbytes for p in self.parts)

    def payload(self) -> dict[str, Any]:
        """The next call's ``parts`` and ``recoveries``, exactly as the sites signed them."""
        return {"parts": [p.to_dict() for p in self.parts],
                "recoveries": [r.to_dict() for r in self.recoveries]}
