"""``medsyft train``, ``release``, ``evaluate``, ``baseline`` and ``status``: what a data scientist types.

Credentials come from the files or environment variables job.toml names, never
from the command line. Running ``train`` again with the same config resumes.
"""

from __future__ import annotations

import argparse
import contextlib
from typing import Any

import pandas as pd


def _print(frame: pd.DataFrame) -> None:
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.float_format", "{:.3f}".format):
        print(frame.to_string())


def _print_test(job: Any, result: Any) -> None:
    """The final model's score on the test split: the figure to quote, not the validation one."""
    from orchestrator import holdout

    test, why = holdout.score_job(job.config, result.spec, result.weights, job.site_metadata().values())
    print(f"\n{test.line()}" if test else f"\nno test score: {why}")


def cmd_train(args: argparse.Namespace) -> int:
    from orchestrator.config import load_config
    from orchestrator.job import FederatedJob

    job = FederatedJob(load_config(args.config))
    server = None
    if args.dashboard is not None:
        from orchestrator.dashboard.server import serve_job

        server = serve_job(job.config, job.run_dir.path, args.dashboard)
        print(f"dashboard: {server.url} (while this command runs; later: medsyft dashboard --run-dir "
              f"{job.run_dir.path})", flush=True)
    try:
        return _train(job, args)
    finally:
        if server is not None:
            server.stop()


def _train(job: Any, args: argparse.Namespace) -> int:
    state = job.state()
    if state is None:
        print(f"submitting to {len(job.config.sites)} sites ...")
    else:
        print(f"resuming job {state.spec.job_id}: {state.completed_round}/{state.spec.rounds} "
              "rounds done")
    _print(job.submit())
    print("waiting for the data owners' approval ...")
    job.wait_for_approval(timeout=args.approval_timeout, on_update=lambda t: _print(t))
    result = job.run(progress=not args.quiet)
    print("\nvalidation metrics (pooled over sites):")
    _print(result.pooled())
    skipped = result.history[result.history["status"] != "ok"]
    if not skipped.empty:
        print("\nskipped site-rounds:")
        _print(skipped[["round", "site", "status", "error"]])
    eps = result.epsilon()
    if not eps.empty:
        print("\nprivacy (ε at each dataset's δ, Opacus RDP accountant):")
        _print(eps.assign(delta=eps["delta"].map("{:.0e}".format)))
    wire = result.wire_cost()
    if wire is not None:
        print(f"\n{wire}")
        print("the final model is encrypted: `medsyft release --config ...` asks every owner to release it"
              " (and scores it on the test split)")
    if result.weights is not None:
        _print_test(job, result)
    print(f"\nplot: {result.plot()}")
    from orchestrator.tracking import describe

    if (where := describe(job.tracker)) is not None:
        print(where)
    print(f"run directory: {result.run_dir}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from pathlib import Path

    from orchestrator.dashboard.server import Dashboard, Server
    from orchestrator.dashboard.snapshot import site_addresses
    from orchestrator.errors import ConfigError

    run_dir = Path(args.run_dir).resolve()
    if not (run_dir / "state.json").is_file():
        raise ConfigError(f"--run-dir {run_dir} holds no run (no state.json); give the run_dir of a job.toml "
                          "that was trained or submitted")
    sites = site_addresses(run_dir)
    server = Server(Dashboard(run_dir, sites), args.port)
    print(f"dashboard of {run_dir}: {server.url} ({len(sites)} sites probed; Ctrl-C stops)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from orchestrator.config import load_config
    from orchestrator.errors import ReleaseRequired
    from orchestrator.job import FederatedJob

    job = FederatedJob(load_config(args.config))
    _print(job.request_release())
    try:
        result = job.fetch_release()
    except ReleaseRequired as exc:
        print(f"not yet: {exc}")
        return 3
    print(f"released: the final model is in {result.run_dir / 'release' / 'model.npz'} "
          f"(record: release.json)")
    _print_test(job, result)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from orchestrator.config import load_config
    from orchestrator.errors import NotApproved
    from orchestrator.job import FederatedJob

    job = FederatedJob(load_config(args.config))
    table = job.request_evaluation(new=args.new)
    ev = job.evaluation_spec()
    assert ev is not None
    wanted = job.config.evaluation
    if (ev.dataset, ev.noise_multiplier, ev.bins) != (wanted.dataset, wanted.noise_multiplier, wanted.bins):
        print(f"note: evaluation {ev.eval_id} was requested for '{ev.dataset}' (σ={ev.noise_multiplier:g}, "
              f"{ev.bins} bins), not as [evaluation] now says; `medsyft evaluate --new` asks for another")
    print(f"evaluation {ev.eval_id}: job {ev.job.job_id}'s final model ({ev.model}) on each site's "
          f"'{ev.dataset}'")
    _print(table)
    try:
        result = job.fetch_evaluation()
    except NotApproved as exc:
        print(f"not yet: {exc}")
        return 3
    print()
    _print(result.table())
    for site, why in result.not_evaluated.items():
        print(f"not evaluated: {site}: {why}")
    print(f"\n{result.line()}")
    print(f"results: {job.run_dir.path / 'evaluation' / ev.eval_id / 'results.json'}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from orchestrator import baseline, holdout
    from orchestrator.config import load_config
    from orchestrator.job import FederatedJob

    job = FederatedJob(load_config(args.config))
    state = job.state()
    spec = state.spec if state is not None else job.make_spec()
    central = baseline.train_centralized(job.config, spec)
    baseline.save(central, job.run_dir.path)
    federated = job.result()
    if federated is not None and federated.weights is not None:
        job.write_model_card(federated)  # the card gains the baseline
    if federated is None:
        print(f"centralized: validation accuracy {central.metrics.accuracy:.3f}, "
              f"ROC-AUC {central.metrics.auc:.3f}, {central.wall_seconds:.1f} s "
              "(no finished federated run to compare with yet)")
    else:
        test = None
        if federated.weights is not None:
            test, _ = holdout.score_job(job.config, federated.spec, federated.weights,
                                        job.site_metadata().values())
        _print(baseline.comparison(federated.summary(), central, federated_test=test,
                                   strategy=job.config.strategy))
    print(central.test.line() if central.test else f"no test score: {central.no_test}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from orchestrator.config import load_config
    from orchestrator.errors import ConfigError
    from orchestrator.status import StatusProbe, show, watch

    probe = StatusProbe(load_config(args.config))
    if args.times is not None and args.times < 1:
        raise ConfigError(f"--times must be 1 or more (got {args.times})")
    if args.watch is not None:
        if args.watch <= 0:
            raise ConfigError(f"--watch takes a refresh interval in seconds above 0 (got {args.watch:g})")
        try:
            watch(probe, interval=args.watch, times=args.times, out=lambda text: print(text, flush=True))
        except KeyboardInterrupt:
            print()
        return 0
    table = probe.table()
    print(probe.job_line())
    print()
    print(show(table))
    return 0 if table["reachable"].all() and table["error"].isna().all() else 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("status", help="every site of a job as this scientist sees it: up, TLS, "
                              "versions, requests, ε, round (--watch refreshes in place)",
                              description=__doc__)
    p.add_argument("--config", required=True, help="job.toml")
    p.add_argument("--watch", nargs="?", type=float, const=5.0, metavar="SECONDS",
                   help="redraw every SECONDS (default 5) until Ctrl-C")
    p.add_argument("--times", type=int, metavar="N", help="with --watch: stop after N redraws")
    p.set_defaults(handler=cmd_status)
    p = subparsers.add_parser("train", help="submit a federated job, wait for approval, train",
                              description=__doc__)
    p.add_argument("--config", required=True, help="job.toml")
    p.add_argument("--approval-timeout", type=float, help="seconds (default: from the config)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dashboard", nargs="?", type=int, const=8765, metavar="PORT",
                   help="serve the live dashboard on 127.0.0.1:PORT while training (default 8765; 0: any)")
    p.set_defaults(handler=cmd_train)
    p = subparsers.add_parser("dashboard", help="serve the dashboard of a run directory (finished, running "
                              "or resumed) on 127.0.0.1", description=__doc__)
    p.add_argument("--run-dir", required=True, metavar="DIR", help="the job's run_dir")
    p.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (default 8765; 0: any free one)")
    p.set_defaults(handler=cmd_dashboard)
    p = subparsers.add_parser("release", help="ask every data owner to release the encrypted "
                              "final model; fetch it once all approved", description=__doc__)
    p.add_argument("--config", required=True, help="job.toml")
    p.set_defaults(handler=cmd_release)
    p = subparsers.add_parser("evaluate", help="score the final model on every hospital's private test "
                              "split (noisy counts, charged to each test dataset's ε)", description=__doc__)
    p.add_argument("--config", required=True, help="job.toml (its [evaluation] table)")
    p.add_argument("--new", action="store_true", help="request a new evaluation, not the run's latest")
    p.set_defaults(handler=cmd_evaluate)
    p = subparsers.add_parser("baseline", help="train the same model centrally on the union",
                              description=__doc__)
    p.add_argument("--config", required=True, help="job.toml")
    p.set_defaults(handler=cmd_baseline)
