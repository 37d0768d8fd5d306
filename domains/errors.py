"""Exceptions a data owner or hospital IT can cause, each with a message that says how to fix it.

The CLI prints ``str(exc)`` as one line and exits with status 2 for every
:class:`MedsyftDomainError`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MedsyftDomainError(Exception):
    """Base class: an expected failure caused by input or by the environment."""


class DataDirError(MedsyftDomainError, OSError):
    """Raised when the data directory is missing, not writable or not a datasite's."""


class DeployError(MedsyftDomainError, RuntimeError):
    """Raised when a datasite cannot be started (port in use, already running, crashed)."""


class DatasiteNotRunning(MedsyftDomainError, ConnectionError):
    """Raised when a command needs the datasite and it does not answer."""


class PublishError(MedsyftDomainError, ValueError):
    """Raised when source data cannot be published; the message names the file and the problem."""


class ShardSpecError(PublishError):
    """Raised for a ``--shard`` or ``--partition`` value that does not describe a partition."""


class RequestNotFound(MedsyftDomainError, LookupError):
    """Raised when a request id (or unique prefix) matches no request, or more than one."""


class AccountError(MedsyftDomainError, ValueError):
    """Raised when a user account cannot be created (bad email, duplicate, bad password file)."""


class AuditLogError(MedsyftDomainError, RuntimeError):
    """Raised when the audit log's hash chain does not verify (it was edited or truncated)."""


class PrivacyBudgetExceeded(MedsyftDomainError, RuntimeError):
    """Raised when approving or running a job would spend more ε than a dataset has left."""


class BudgetError(MedsyftDomainError, ValueError):
    """Raised for an invalid ε budget or δ, or a budget ledger that cannot be read."""


class HEKeyError(MedsyftDomainError, ValueError):
    """Raised when a datasite's HE key is missing or unreadable, or a ciphertext is under another key."""


class SiteKeysError(MedsyftDomainError, ValueError):
    """Raised when a datasite's site-keys kit is missing or unreadable, belongs to another site or
    another key ceremony, or does not match the roster an approved job names."""


class PolicyRefused(MedsyftDomainError, PermissionError):
    """Raised when the site policy forbids approving a request (custom code, a job off the roster)."""


class AuditKeyError(AuditLogError):
    """Raised when the audit log's HMAC key is missing while keyed entries exist, or is unreadable."""


class SandboxError(MedsyftDomainError, RuntimeError):
    """Raised when custom code cannot run in the bubblewrap sandbox (``bwrap`` missing or unable to
    create namespaces, an input that cannot be sent into it); the code then does not run at all."""


class InferenceError(MedsyftDomainError, ValueError):
    """Raised when a released model cannot be loaded, exported, or run on an image."""
