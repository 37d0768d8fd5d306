"""Exceptions a data scientist can cause or meet; the CLI prints each as one line, exit 2."""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class for expected orchestrator failures."""


class ConfigError(OrchestratorError, ValueError):
    """Raised when job.toml is unreadable or a value breaks a rule (the message names the key)."""


class SiteUnavailable(OrchestratorError, ConnectionError):
    """Raised when a datasite cannot be reached or refuses the scientist's login."""


class NotApproved(OrchestratorError, RuntimeError):
    """Raised when a job cannot run because a datasite has not approved (or denied) it."""


class QuorumLost(OrchestratorError, RuntimeError):
    """Raised when fewer sites than ``min_sites`` completed a round; the job stops there."""


class RoundFailed(OrchestratorError, RuntimeError):
    """Raised by a strategy that cannot make a round's next model (say, a mask recovery failed).

    The loop checkpoints the previous round and stops the job with :class:`QuorumLost`, naming
    the reason; running the job again resumes there.
    """


class ReleaseRequired(OrchestratorError, PermissionError):
    """Raised when the plaintext final model is asked for before every data owner approved its release."""
