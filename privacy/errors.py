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
