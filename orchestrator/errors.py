"""Exceptions raised by the orchestrator."""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class for expected orchestrator failures."""
