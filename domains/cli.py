"""``medsyft domain ...``: what hospital IT and the data owner type.

Handlers import their heavy modules (PySyft, MONAI) only when they run, so a
mistyped option or a bad ``--shard`` fails in well under a second. Every
command takes ``--data-dir`` (or ``MEDSYFT_DATA_DIR``): the directory is the
datasite's identity.
"""

from __future__ import annotations

import argparse
import os
import signal
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd

from domains.errors import MedsyftDomainError
from domains.site.datadir import DataDir


def _data_dir(args: argparse.Namespace) -> DataDir:
    if not args.data_dir:
        raise MedsyftDomainError("no data directory given; pass --data-dir DIR or set MEDSYFT_DATA_DIR")
    return DataDir(args.data_dir)


def _show(frame: pd.DataFrame, empty: str) -> None:
    if frame.empty:
        print(empty)
    else:
        with pd.option_context("display.max_colwidth", 60, "display.width", 200):
            print(frame.to_string(index=False))


# -- deploy / stop / status ----------------------------------------------------
def cmd_deploy(args: argparse.Namespace) -> int:
    from domains.site import he_key, lifecycle, site_keys
    data_dir = _data_dir(args)
    tls_files = _tls_files(args)  # fills args.he_key and args.site_keys from a kit
    key = he_key.check(args.he_key) if args.he_key else None  # bad key files stop the deploy
    if args.site_keys:                                          # before anything starts
        site_keys.check_deploy(data_dir, args.site_keys, name=args.name, he_key_id=key)
    db, db_password = _database(args)
    stop_asked: list[int] = []
    if not args.detach:  # Ctrl-C during start-up is kept for when the datasite is up, never lost
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda signum, _: stop_asked.append(signum))
    result, proc = lifecycle.deploy(
        data_dir, name=args.name, port=args.port, host=args.host, detach=args.detach,
        tls_files=tls_files, insecure_http=args.insecure_http, db=db, db_password=db_password,
    )
    if not args.detach:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: proc.terminate())
        if stop_asked:
            proc.terminate()
    cfg = result.config
    print(f"datasite '{cfg.name}' is up at {cfg.url} (pid {result.pid})")
    if cfg.db:
        print(f"PySyft store: {cfg.db} (password in {data_dir.file('db.password')}, mode 0600)")
        from domains.site import database
        if (warning := database.unverified_warning(cfg.db)) is not None:
            print(warning)
    if cfg.tls:
        print(f"TLS: {data_dir.tls_dir}/server.crt; client certificates "
              f"{'required from the federation CA (mutual TLS)' if cfg.client_auth else 'not asked for'}")
    elif cfg.insecure_http:
        print(f"WARNING: plain HTTP on {cfg.host} (--insecure-http): passwords cross the network in clear")
    if args.he_key:
        print(f"HE key {he_key.install(data_dir, args.he_key)[:8]} installed "
              f"({data_dir.file(he_key.HE_KEY_FILE)}, mode 0600)")
    if args.site_keys:
        kit = site_keys.install(data_dir, args.site_keys)
        print(f"site keys of '{kit.site}' installed, roster {kit.roster.fingerprint[:12]} "
              f"({data_dir.file(site_keys.SITE_KEYS_FILE)}, mode 0600)")
    if result.created:
        creds = data_dir.read_credentials()
        print(f"admin: {creds.email}; password in {result.credentials_file} (mode 0600)")
    if args.detach:
        print(f"log: {data_dir.file('datasite.log')}; stop with "
              f"`medsyft domain stop --data-dir {data_dir.path}`")
        return 0
    # Both signals are handled by us (above): a process started in the background of a script
    # inherits SIGINT as ignored, and Python then installs no KeyboardInterrupt handler.
    print("running in the foreground; Ctrl-C stops it", flush=True)
    code = proc.wait()
    lifecycle.record_stop(data_dir, proc.pid)
    print(f"datasite '{cfg.name}' stopped")
    return 0 if code in (0, -signal.SIGTERM) else code


def _database(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """``--db`` and its password (a file or MEDSYFT_DB_PASSWORD), checked before anything starts."""
    from domains.site import database

    if args.db is None:
        if args.db_password_file:
            raise MedsyftDomainError("--db-password-file goes with --db postgresql://USER@HOST:PORT/DB")
        return None, None
    return database.parse(args.db), database.read_password(args.db_password_file)


def _tls_files(args: argparse.Namespace) -> Any:
    """The TLS files of ``--kit`` or ``--tls-cert/--tls-key/--tls-ca`` (None: no new TLS)."""
    from domains.site import lifecycle, tls

    if args.kit and (args.tls_cert or args.tls_key or args.tls_ca):
        raise MedsyftDomainError("give either --kit or --tls-cert/--tls-key, not both")
    if args.kit:
        files = tls.kit_files(args.kit)
        if not args.name and not _data_dir(args).is_initialized:  # a new datasite is named after its kit
            from privacy import pki
            args.name = pki.info(pki.load_cert(files["cert"])).common_name
        args.he_key = args.he_key or (str(files["he_key"]) if "he_key" in files else None)
        args.site_keys = args.site_keys or (str(files["site_keys"]) if "site_keys" in files else None)
        return lifecycle.TLSFiles(files["cert"], files["key"], files["ca"])
    if bool(args.tls_cert) != bool(args.tls_key):
        raise MedsyftDomainError("--tls-cert and --tls-key go together; give both (PEM files)")
    if args.tls_ca and not args.tls_cert:
        raise MedsyftDomainError("--tls-ca needs --tls-cert and --tls-key")
    if args.tls_cert and args.insecure_http:
        raise MedsyftDomainError("--insecure-http with TLS files makes no sense; drop one of them")
    if args.tls_cert:
        return lifecycle.TLSFiles(Path(args.tls_cert), Path(args.tls_key),
                                  Path(args.tls_ca) if args.tls_ca else None)
    return None


def cmd_stop(args: argparse.Namespace) -> int:
    from domains.site import lifecycle
    data_dir = _data_dir(args)
    pid = lifecycle.stop(data_dir)
    name = data_dir.read_config().name
    print(f"datasite '{name}' stopped (pid {pid})" if pid else f"datasite '{name}' was not running")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from domains.site.status import status

    report = status(_data_dir(args))
    state = f"running (pid {report.pid})" if report.pid else "running"
    print(f"datasite: {report.name}  {report.url}  "
          f"{state if report.reachable else 'NOT REACHABLE'}")
    print(f"transport: {report.transport}")
    if not report.reachable:
        _show(report.datasets, "no datasets published yet")
        print(f"start it with `medsyft domain deploy --data-dir {_data_dir(args).path} --detach`")
        return 3  # as `pg_ctl status` does for a server that is not running
    print("\ndatasets:")
    _show(report.datasets, "  (none; publish one with `medsyft domain publish`)")
    print("\nusers:")
    _show(report.users, "  (none)")
    print(f"\npending requests: {report.pending_requests}")
    return 0


# -- publish ---------------------------------------------------------------------
def cmd_publish(args: argparse.Namespace) -> int:
    from domains.data.formats import parse_label_names
    from domains.data.publish import PublishRequest, publish

    req = PublishRequest(
        source=Path(args.source) if args.source else None, fmt=args.format, split=args.split,
        shard=args.shard, partition=args.partition, seed=args.seed, name=args.name,
        image_size=args.image_size, channels=args.channels,
        label_names=parse_label_names(args.label_names) if args.label_names else None,
        limits=_source_limits(args), synthetic_count=args.count, pysyft_images=args.pysyft_images,
    )
    req.epsilon_budget, req.delta = args.epsilon_budget, args.delta
    result = publish(_data_dir(args), req)
    meta = result.metadata
    counts = ", ".join(f"{k}: {v}" for k, v in meta["class_counts"].items())
    kind = "SYNTHETIC " if meta.get("synthetic") else ""
    print(f"published {kind}dataset '{result.name}': {meta['n']} images "
          f"{meta['channels']}x{meta['image_size'][0]}x{meta['image_size'][1]} ({counts}); "
          f"privacy budget ε={meta['epsilon_budget']:g}, δ={meta['delta']:g}"
          + ("; pixels in the training store only (PySyft holds the labels and a mock sample)"
             if meta.get("pysyft_images") == "mock-only" else ""))
    return 0


def _source_limits(args: argparse.Namespace) -> Any:
    """The --max-* options given, over SourceLimits' defaults; a malformed size is one error line."""
    from domains.data.formats import SourceLimits, parse_size
    from domains.errors import PublishError

    given: dict[str, Any] = {k: getattr(args, k) for k in ("max_pixels", "max_npz_ratio")
                             if getattr(args, k) is not None}
    for key in ("max_npz_bytes", "max_npz_member_bytes"):
        if getattr(args, key) is None:
            continue
        try:
            given[key] = parse_size(getattr(args, key))
        except ValueError as exc:
            raise PublishError(f"--{key.replace('_', '-')}: {exc}") from None
    return SourceLimits(**given)


def cmd_budget(args: argparse.Namespace) -> int:
    from domains import budget
    data_dir = _data_dir(args)
    data_dir.require_initialized()
    if args.set:
        from domains.data import store
        n = len(store.load(data_dir, args.set).labels)
        st = budget.set_budget(data_dir, args.set, n_samples=n, epsilon_budget=args.epsilon_budget,
                               delta=args.delta)
        print(f"dataset '{args.set}': ε budget {st.epsilon_budget:g} at δ={st.delta:.1e}")
    frame = budget.status_frame(data_dir)
    _show(_eps_format(frame), "no dataset has a privacy budget yet (publish one)")
    if args.jobs and not frame.empty:
        for name in frame["dataset"]:
            jobs = budget.status(data_dir, name).jobs
            if jobs:
                print(f"\njobs on {name}:")
                print(_eps_format(pd.DataFrame([vars(j) for j in jobs])).to_string(index=False))
    return 0


def _eps_format(frame: pd.DataFrame) -> pd.DataFrame:
    """ε to 4 decimals, δ in scientific notation (rounding would print 1e-05 as 0.0)."""
    out = frame.copy()
    for col in out.columns:
        if "epsilon" in col:
            out[col] = out[col].map(lambda v: f"{v:.4f}")
        elif col == "delta":
            out[col] = out[col].map(lambda v: f"{v:.1e}")
    return out


# -- accounts ----------------------------------------------------------------------
def cmd_add_scientist(args: argparse.Namespace) -> int:
    from domains.site.accounts import add_scientist, read_password_file

    password = read_password_file(Path(args.password_file)) if args.password_file else None
    chosen = add_scientist(_data_dir(args), email=args.email, name=args.full_name, password=password)
    print(f"created data scientist {args.email}")
    if password is None:
        print(f"password (shown once, give it to them securely): {chosen}")
    return 0


# -- requests --------------------------------------------------------------------
def cmd_requests(args: argparse.Namespace) -> int:
    from domains.review.requests import RequestBook

    _show(RequestBook(_data_dir(args)).table(), "no code requests")
    return 0


def format_review(report: Any) -> str:
    lines = [
        f"request {report.request_id}  [{report.status}]",
        f"from {report.requester}: function `{report.function}`",
        f"executions allowed: {report.executions_allowed or 'unlimited'}; "
        f"used: {report.executions_used}  (PySyft 0.9.5 does not enforce this limit itself)",
        "", "inputs:",
    ]
    for spec in report.inputs:
        note = {"asset": "private data, fixed at approval",
                "constant": "fixed at approval",
                "scientist-owned": "the scientist may pass a new value at EVERY call"}[spec.kind]
        lines.append(f"  {spec.name:<14} {spec.kind:<16} {spec.value}  ({note})")
    lines += _policy_lines(report)
    lines += _privacy_lines(report)
    lines += ["", "code:", textwrap.indent(report.code.rstrip(), "  | "), "", "review flags:"]
    if not report.flags:
        lines.append("  none (the automated aid found nothing; read the code anyway)")
    for flag in report.flags:
        lines.append(f"  [{flag.severity.upper():<6}] line {flag.line}: {flag.message}")
    lines.append("\nflags inform; you decide: `medsyft domain approve ID` or "
                 "`medsyft domain deny ID --reason TEXT`")
    return "\n".join(lines)


def _policy_lines(report: Any) -> list[str]:
    verdict = getattr(report, "verdict", None)
    if verdict is None:
        return []
    if verdict.is_medsyft:
        return ["", "site policy:", f"  medsyft {verdict.kind} code: its source and input bindings are "
                "exactly medsyft's template; it runs the datasite's installed medsyft runtime"]
    lines = ["", "site policy:", "  CUSTOM CODE: not medsyft's own job or release code. It runs ARBITRARY "
             "code of the scientist's choosing on this datasite.",
             *[f"  why not medsyft's: {reason}" for reason in verdict.reasons],
             "  approvable only with `medsyft domain approve ID --allow-custom-code` on a datasite "
             "whose policy allows custom code (`medsyft domain policy`)"]
    return lines


def _privacy_lines(report: Any) -> list[str]:
    rev = getattr(report, "privacy", None)
    if rev is None:
        return ["", "privacy:", "  not a medsyft job: no ε accounting applies; the code could release "
                "anything it computes. Read it carefully."]
    lines = ["", "privacy:"] + [f"  {line}" for line in rev.lines]
    lines += [f"  WARNING: {w}" for w in rev.warnings]
    return lines


def cmd_review(args: argparse.Namespace) -> int:
    from domains.review.requests import RequestBook

    print(format_review(RequestBook(_data_dir(args)).review(args.id)))
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    from domains.review.requests import RequestBook

    report = RequestBook(_data_dir(args)).approve(args.id, allow_custom_code=args.allow_custom_code)
    print(f"approved request {report.request_id} (`{report.function}` from {report.requester})")
    return 0


def cmd_policy(args: argparse.Namespace) -> int:
    from domains.review.code_policy import load_policy, save_policy

    data_dir = _data_dir(args)
    data_dir.require_initialized()
    policy = load_policy(data_dir)
    limits = {name: getattr(args, f"sandbox_{name}") for name in _SANDBOX_LIMITS
              if getattr(args, f"sandbox_{name}") is not None}
    if args.allow_custom_code is not None or limits:
        from dataclasses import asdict, replace

        if args.allow_custom_code is not None:
            policy.allow_custom_code = args.allow_custom_code == "on"
        policy.sandbox = replace(policy.sandbox, **limits)
        save_policy(data_dir, policy)
        from domains.site.audit import AuditLog, local_actor
        from domains.site.datadir import AUDIT_FILE

        AuditLog(data_dir.file(AUDIT_FILE)).append(
            "policy", actor=local_actor(), subject=data_dir.read_config().name,
            allow_custom_code=policy.allow_custom_code, sandbox=asdict(policy.sandbox))
    state = "ALLOWED (approve each with --allow-custom-code)" if policy.allow_custom_code else "refused"
    box = policy.sandbox
    print(f"medsyft job and release code: approvable; custom code: {state}; "
          f"custom code approved so far: {len(policy.custom_approved)}; sandbox limits per call: "
          f"{box.memory_mb} MiB memory, {box.cpu_seconds} s CPU, {box.wall_seconds} s wall clock, "
          f"{box.disk_mb} MiB disk")
    return 0


# `medsyft domain policy --sandbox-NAME`: the limits of domains.site.sandbox.SandboxLimits
_SANDBOX_LIMITS = {
    "memory_mb": "address space of each process of custom code, MiB",
    "cpu_seconds": "CPU time of each process of custom code, seconds",
    "wall_seconds": "wall-clock time of one call of custom code, seconds",
    "disk_mb": "size of custom code's writable scratch space (a tmpfs), MiB",
}


def cmd_deny(args: argparse.Namespace) -> int:
    from domains.review.requests import RequestBook

    if not args.reason.strip():
        raise MedsyftDomainError("--reason must not be empty; tell the scientist why")
    report = RequestBook(_data_dir(args)).deny(args.id, reason=args.reason)
    print(f"denied request {report.request_id} (`{report.function}` from {report.requester})")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from domains.site.datasite import Datasite

    if args.verify:
        return _verify_audit(_data_dir(args))
    frame = Datasite(_data_dir(args).path).audit(sync=True)
    if args.csv:
        try:
            frame.to_csv(args.csv, index=False)
        except OSError as exc:
            raise MedsyftDomainError(
                f"cannot write {args.csv} ({exc.strerror}); choose another path"
            ) from exc
        print(f"wrote {len(frame)} audit entries to {args.csv}")
    else:
        _show(frame, "audit log is empty")
    return 0


def _verify_audit(data_dir: DataDir) -> int:
    """Check the log as it stands, without syncing first: verifying must not add to the evidence,
    and it works on a stopped datasite. A broken log raises AuditLogError (one line, exit 2)."""
    from domains.site.audit import AuditLog
    from domains.site.datadir import AUDIT_FILE

    data_dir.require_initialized()
    print(AuditLog(data_dir.file(AUDIT_FILE)).verify().summary())
    return 0


# -- parser ------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {value}")
    return value


def _add(sub: Any, name: str, handler: Any, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    parser.add_argument("--data-dir", default=os.environ.get("MEDSYFT_DATA_DIR"),
                        help="the datasite's data directory (default: $MEDSYFT_DATA_DIR)")
    parser.set_defaults(handler=handler)
    return parser


def register(subparsers: Any) -> None:
    domain = subparsers.add_parser(
        "domain", help="run a hospital datasite: deploy, publish, review requests",
        description="Commands for hospital IT and data owners.",
    )
    sub = domain.add_subparsers(dest="domain_command", metavar="ACTION",
                                parser_class=type(domain))
    sub.required = True

    p = _add(sub, "deploy", cmd_deploy, "start a PySyft datasite storing everything in --data-dir")
    p.add_argument("--name", help="datasite name (required the first time)")
    p.add_argument("--port", type=_port, required=True)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    p.add_argument("--detach", action="store_true", help="run in the background (pid+log in DIR)")
    p.add_argument("--he-key", help="hospital-secret.medsyftkey from `medsyft keys init` "
                   "(copied into DIR; needed for encrypted aggregation)")
    p.add_argument("--site-keys", help="this hospital's NAME/site-keys.medsyftkey from `medsyft keys "
                   "init --site NAME` (copied into DIR; needed for verifiable secure aggregation)")
    p.add_argument("--kit", help="this hospital's folder from `medsyft federation init`: serve HTTPS with "
                   "its certificate, require client certificates from its CA, and install its HE and "
                   "site keys")
    p.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (instead of --kit)")
    p.add_argument("--tls-key", help="the PEM key of --tls-cert")
    p.add_argument("--tls-ca", help="require client certificates issued by this CA (mutual TLS)")
    p.add_argument("--db", metavar="postgresql://USER@HOST:PORT/DB",
                   help="keep PySyft's store in PostgreSQL (medsyft's ledgers, audit log, data stay in DIR)")
    p.add_argument("--db-password-file", metavar="FILE",
                   help="the database password on this file's first line (else $MEDSYFT_DB_PASSWORD)")
    p.add_argument("--insecure-http", action="store_true",
                   help="allow plain HTTP on a non-loopback --host (passwords travel in clear; logged)")

    _add(sub, "stop", cmd_stop, "stop the datasite of --data-dir")
    _add(sub, "status", cmd_status, "reachable or not, datasets, users, pending requests")

    p = _add(sub, "publish", cmd_publish, "publish imaging data as a private dataset with a mock")
    p.add_argument("--source", help="npz file or folder; omit for the synthetic chest phantoms")
    p.add_argument("--format", help="npz | folder | dicom (default: detected)")
    p.add_argument("--split", default="train", help="npz split (default: train)")
    p.add_argument("--shard", help="I/N: publish hospital I's part of N")
    p.add_argument("--partition", default="iid", help="iid | dirichlet:ALPHA (with --shard)")
    p.add_argument("--seed", type=int, default=0, help="partition and phantom seed (default 0)")
    p.add_argument("--name", help="dataset name (default: from the source)")
    p.add_argument("--image-size", type=_positive_int, help="resize to SIZE x SIZE")
    p.add_argument("--channels", type=int, choices=(1, 3), help="1 (grey) or 3 (RGB)")
    p.add_argument("--label-names", metavar="NAMES",
                   help="label schema: names in index order (normal,pneumonia), or what each label "
                        "value means (--label-names=-1:uncertain,0:normal,1:pneumonia); needed for "
                        "numeric labels that are not 0..K-1")
    p.add_argument("--max-pixels", type=_positive_int, metavar="N",
                   help="largest image, height x width, checked before decoding (default 67108864, "
                        "8192x8192)")
    p.add_argument("--max-npz-bytes", metavar="SIZE",
                   help="declared uncompressed size of all arrays of an npz, e.g. 16G (default 8G)")
    p.add_argument("--max-npz-member-bytes", metavar="SIZE",
                   help="declared uncompressed size of one npz array (default 4G)")
    p.add_argument("--max-npz-ratio", type=_positive_float, metavar="X",
                   help="how much one npz array above 1 MiB may expand (default 200x)")
    p.add_argument("--count", type=_positive_int, default=3000,
                   help="synthetic images to generate without --source (default 3000)")
    p.add_argument("--pysyft-images", default="auto", choices=("auto", "full", "mock-only"),
                   help="what PySyft's images asset holds: full (every pixel, for custom code), "
                        "mock-only (no pixel; jobs read the training store; publishes at disk speed), "
                        "auto: full up to 64 MiB of images (default auto)")
    p.add_argument("--epsilon-budget", type=float, default=10.0,
                   help="total ε all jobs together may spend on this dataset (default 10)")
    p.add_argument("--delta", type=float, default=None,
                   help="δ of the budget (default: min(1e-5, 0.1/N))")

    p = _add(sub, "budget", cmd_budget, "ε budget, spent and reserved per dataset")
    p.add_argument("--jobs", action="store_true", help="also list every job's ε per dataset")
    p.add_argument("--set", metavar="DATASET",
                   help="give DATASET a budget (one published before budgets existed); refused "
                        "once anything was spent under another budget")
    p.add_argument("--epsilon-budget", type=float, default=10.0, help="with --set (default 10)")
    p.add_argument("--delta", type=float, default=None, help="with --set (default min(1e-5, 0.1/N))")

    p = _add(sub, "add-scientist", cmd_add_scientist, "create a data-scientist account")
    p.add_argument("--email", required=True)
    p.add_argument("--full-name", help="display name")
    p.add_argument("--password-file", help="read the password from this file's first line")

    _add(sub, "requests", cmd_requests, "table of code requests")
    for name, handler, text in (
        ("review", cmd_review, "show a request's code, inputs, limit and review flags"),
        ("approve", cmd_approve, "approve a code request"),
        ("deny", cmd_deny, "deny a code request"),
    ):
        p = _add(sub, name, handler, text)
        p.add_argument("id", help="request id or a unique prefix of it")
        if name == "deny":
            p.add_argument("--reason", required=True, help="shown to the scientist")
        if name == "approve":
            p.add_argument("--allow-custom-code", action="store_true",
                           help="approve code that is not medsyft's own job or release (it runs "
                                "arbitrary code; needs `medsyft domain policy --allow-custom-code on`)")

    p = _add(sub, "policy", cmd_policy, "which code this datasite may approve (default: medsyft's own)")
    p.add_argument("--allow-custom-code", choices=("on", "off"),
                   help="let owners approve custom code with `approve --allow-custom-code`")
    from domains.site.sandbox import SandboxLimits

    for limit, text in _SANDBOX_LIMITS.items():
        p.add_argument(f"--sandbox-{limit.replace('_', '-')}", type=_positive_int, metavar="N",
                       help=f"{text} (default {getattr(SandboxLimits(), limit)})")

    p = _add(sub, "audit", cmd_audit, "the append-only audit log as a table")
    audit_mode = p.add_mutually_exclusive_group()
    audit_mode.add_argument("--csv", help="also export it to this CSV file")
    audit_mode.add_argument("--verify", action="store_true",
                            help="only check the keyed chain: OK with the entry count, or the line "
                                 "where it breaks (exit 2)")

