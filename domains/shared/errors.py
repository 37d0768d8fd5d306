"""Exceptions of the shared values (codec, job spec): each names the broken rule and how to fix it.

:class:`TrainingError` and :class:`TrainConfigError` are defined here because the job spec raises
them; :mod:`domains.runtime.errors` re-exports them beside the runtime's own errors.
"""

from __future__ import annotations

from domains.errors import MedsyftDomainError


class CodecError(MedsyftDomainError, ValueError):
    """Raised when a stored or received value is in no form the codec reads: an unknown format
    tag, missing or extra fields, an array that is missing, truncated or of the wrong dtype, a
    layout that does not match the model it is loaded into, or a damaged file.

    A :class:`~domains.errors.MedsyftDomainError`, so a datasite refuses such a payload with this
    message, before any private data is read, and its call log records the call ``refused``.
    """


class TrainingError(MedsyftDomainError, RuntimeError):
    """Raised when training, evaluation or aggregation cannot proceed with the given input.

    Examples: weights whose keys or shapes do not match the model, an empty set of updates to
    average, images and labels of different lengths, a validation fraction outside (0, 1).
    """


class TrainConfigError(TrainingError, ValueError):
    """Raised by :meth:`TrainConfig.validate` for a hyperparameter outside its allowed range."""


class TLSProblem(MedsyftDomainError, ConnectionError):
    """Raised before any password is sent when a datasite cannot be reached as configured over TLS:
    a certificate from another CA, an expired or not yet valid one, a host name it does not name,
    ``http://`` to an HTTPS datasite or the reverse, or a client certificate missing or refused
    (:mod:`domains.shared.tls`). The message names the site and what to change."""
