"""One encoding of a signed part wherever it travels or is stored: its header and its ciphertext.

A :class:`privacy.secagg_messages.SignedPart` is a small signed header (site, job, call, weight,
site set, roster, basis, ciphertext digest, signature) beside a large ciphertext. A site returns
the two apart, ``{"part": header, "weights": ciphertext}``, so the call ledger stores and replays
the ciphertext exactly as it stores an encrypted update; the datasite's secure-aggregation state
and the orchestrator's checkpoints keep the header as JSON and the packed ciphertext bytes as one
``uint8`` array (:func:`to_record`). :func:`join` rebuilds and checks the part from any of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from privacy.secagg_messages import SignedPart


def split(part: SignedPart) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(header, ciphertext)``: the signed fields as JSON-able values, and the vector's wire form."""
    header = part.to_dict()
    return header, header.pop("vector")


def join(header: Any, vector: Any) -> SignedPart:
    """The part again; :class:`privacy.errors.AggregationRefused` (``malformed``) if it is not one."""
    from privacy.errors import AggregationRefused
    from privacy.secagg_messages import SignedPart

    if not isinstance(header, dict):
        raise AggregationRefused(f"a part's header must be a dict (got {type(header).__name__})",
                                 rule="malformed")
    return SignedPart.from_dict({**header, "vector": vector})


def to_record(part: SignedPart) -> tuple[dict[str, Any], np.ndarray]:
    """``(JSON-able record, packed ciphertext bytes)`` for an npz file."""
    header, vector = split(part)
    chunks = np.asarray(vector.pop("chunks"), dtype=np.uint8)
    return {**header, "vector": vector}, chunks


def from_record(record: Any, chunks: np.ndarray) -> SignedPart:
    """The part of :func:`to_record`'s output."""
    if not isinstance(record, dict) or not isinstance(record.get("vector"), dict):
        from privacy.errors import AggregationRefused

        raise AggregationRefused("a stored part needs its header and vector metadata", rule="malformed")
    header = {k: v for k, v in record.items() if k != "vector"}
    return join(header, {**record["vector"], "chunks": np.asarray(chunks, dtype=np.uint8)})
