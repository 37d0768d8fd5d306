"""Exceptions raised by the training code, each saying what went wrong and how to fix it.

They extend :class:`~domains.errors.MedsyftDomainError`, so the hospital CLI prints them as one
line, and a built-in type, so callers that catch ``ValueError`` or ``RuntimeError`` still work.
"""

from __future__ import annotations

from domains.shared.errors import TrainConfigError, TrainingError

__all__ = ["TrainConfigError", "TrainingError"]  # defined in domains.shared (the job spec raises them)


class UnknownModel(TrainingError, ValueError):
    """Raised when a model name is not in the registry; the message lists the registered names.

    A ``ValueError`` rather than a ``KeyError`` because ``str(KeyError)`` wraps the message in
    quotes, which reads badly on a command line.
    """


class ExecutionLimitReached(TrainingError):
    """Raised when a job asks for more calls than its approval allows."""


class CallOutOfOrder(TrainingError):
    """Raised when call k arrives before call k-1 was resolved (run, failed or skipped) on the site."""


class CallNotRepeatable(TrainingError):
    """Raised when a call that failed, was interrupted or was skipped is asked for again."""


class CallLogCorrupt(TrainingError):
    """Raised when a job's call log on the datasite cannot be read: never silently reset."""


class PrivateComputationFailed(TrainingError):
    """Raised for any failure after private data was touched; its message never depends on the data."""


class MissedAggregate(TrainingError):
    """Raised when a site's copy of a server optimizer's state is not at the previous call: it missed
    an aggregate, cannot rebuild the optimizer's moments, and stays out of the job."""
