"""A signed part as a call returns it and as a datasite keeps it: names over the one codec.

A :class:`privacy.secagg_messages.SignedPart` is a small signed header (site, job, call, weight,
site set, roster, basis, ciphertext digest, signature) beside a large ciphertext. A site returns
the two apart, ``{"part": header, "weights": ciphertext}``, so the call log stores and replays
the ciphertext exactly as it stores an encrypted update; the datasite's secure-aggregation state
keeps the part's stored form (:func:`to_record`: JSON-able header, one ``uint8`` array). Both
forms are :mod:`domains.shared.codec`'s; this module only names them for the runtime.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from privacy.secagg_messages import SignedPart


def split(part: SignedPart) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(header, ciphertext)``: the signed fields as JSON-able values, and the vector's wire form."""
    from domains.shared.codec import split_part

    header, vector = split_part(part)
    return header, vector.to_dict()


def join(header: Any, vector: Any) -> SignedPart:
    """The part again; :class:`privacy.errors.AggregationRefused` (``malformed``) if it is not one."""
    from domains.shared.codec import join_part

    return join_part(header, vector)


def to_record(part: SignedPart) -> tuple[dict[str, Any], np.ndarray]:
    """``(JSON-able record, packed ciphertext bytes)``: the part's stored form, for an npz file."""
    from domains.shared.codec import encode

    record, arrays = encode(part)
    return record, arrays["chunks"]


def from_record(record: Any, chunks: np.ndarray) -> SignedPart:
    """The part of :func:`to_record`'s output; :class:`~domains.shared.errors.CodecError` or
    :class:`~privacy.errors.AggregationRefused` if it is not one."""
    from domains.shared.codec import decode
    from privacy.errors import AggregationRefused
    from privacy.secagg_messages import PART_FORMAT

    if not (isinstance(record, dict) and record.get("format") == PART_FORMAT
            and isinstance(record.get("vector"), dict)):
        raise AggregationRefused("a stored part needs its header and vector metadata", rule="malformed")
    part: SignedPart = decode(record, {"chunks": np.asarray(chunks, dtype=np.uint8)})
    return part
