"""Exceptions raised by the privacy mathematics: DP accounting and homomorphic encryption."""

from __future__ import annotations


class PrivacyError(Exception):
    """Base class for privacy failures."""


class DPConfigError(PrivacyError, ValueError):
    """Raised for DP parameters that are out of range (noise, clipping, δ, sample rate, target ε)."""


class HEError(PrivacyError, ValueError):
    """Raised for malformed key files or ciphertexts, or values the encoding cannot represent."""


class KeyMismatch(HEError):
    """Raised when a ciphertext was made under another key id than the context given."""


class NoSecretKey(HEError):
    """Raised when decryption is asked of a context that holds no secret key (the orchestrator's)."""


class RosterError(PrivacyError, ValueError):
    """Raised for a bad federation roster or site-key file: invalid or duplicate site names, a file
    of the wrong role, a roster whose fingerprint does not match its content, a site missing from
    the roster, private keys that do not belong to the roster's public keys, or key files that
    already exist where a ceremony would write."""


class SecAggError(PrivacyError, ValueError):
    """Raised for secure-aggregation input a site cannot use: a job id, call number, site set,
    ciphertext or context that does not fit the roster (:mod:`privacy.secagg`)."""


class AggregationRefused(SecAggError):
    """Raised by a site verifying the signed parts of a round before it adds or decrypts anything:
    a forged, relabelled, replayed, off-roster, duplicate, extra or missing part, site sets that
    disagree, weights above 1, too few sites, or an invalid mask recovery. ``site`` names the part's
    site (or ``None``) and ``rule`` the rule it breaks, so a runtime can log and audit both."""

    def __init__(self, message: str, *, site: str | None = None, rule: str = "invalid") -> None:
        super().__init__(message)
        self.site = site
        self.rule = rule


class RecoveryRefused(SecAggError):
    """Raised when a surviving site will not reveal its masks with a dropped site: it has seen a
    valid part from that site for the call, it already revealed masks for another survivor set of
    the same call, or the request is inconsistent with its own part."""


class PKIError(PrivacyError, ValueError):
    """Raised for a federation certificate or key that cannot be used: unreadable, not PEM, a key that
    is not the certificate's, expired or not yet valid, the wrong role (a scientist's certificate
    where a datasite's belongs), or not issued by the federation CA (:mod:`privacy.pki`)."""
