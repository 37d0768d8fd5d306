"""Differential privacy and homomorphic encryption that both datasites and orchestrator trust (issue 4)."""

__all__: list[str] = []
