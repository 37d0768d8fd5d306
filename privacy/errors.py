"""Exceptions raised by the privacy mathematics."""

from __future__ import annotations


class PrivacyError(Exception):
    """Base class for privacy failures."""
