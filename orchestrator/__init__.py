"""What a data scientist runs: connect to datasites, submit jobs, aggregate (issue 3)."""

__all__: list[str] = []
