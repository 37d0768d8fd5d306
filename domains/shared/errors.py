"""Exceptions of the shared values' codec; each message names the broken rule and how to fix it."""

from __future__ import annotations

from domains.errors import MedsyftDomainError


class CodecError(MedsyftDomainError, ValueError):
    """Raised when a stored or received value is in no form the codec reads: an unknown format
    tag, missing or extra fields, an array that is missing, truncated or of the wrong dtype, a
    layout that does not match the model it is loaded into, or a damaged file.

    A :class:`~domains.errors.MedsyftDomainError`, so a datasite refuses such a payload with this
    message, before any private data is read, and its call ledger records the call ``refused``.
    """
