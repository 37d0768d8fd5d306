"""The federation's web dashboard: a page on loopback while a job runs, and ``/metrics`` for monitoring.

- :mod:`~orchestrator.dashboard.health` - probes every site's public metadata route in the background
- :mod:`~orchestrator.dashboard.snapshot` - one JSON view of a run directory (rounds, metrics, ε, bytes)
- :mod:`~orchestrator.dashboard.metrics` - the same figures in Prometheus' text format
- :mod:`~orchestrator.dashboard.server` - the Starlette app and its uvicorn server on 127.0.0.1

The page (``static/``) is plain HTML, CSS and JavaScript with its own SVG charts: nothing comes from
a CDN and nothing reaches the internet.
"""
