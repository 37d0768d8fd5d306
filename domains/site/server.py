"""The datasite process: one PySyft 0.9.5 datasite serving one data directory.

Run as ``python -m domains.site.server --data-dir DIR``; ``medsyft domain deploy``
starts it (in the foreground or detached). Everything PySyft would put under the
system temp dir goes under DIR instead, and the identity PySyft would generate
afresh each start (signing key, server uid) is read from DIR, which is what makes
a restart see its own users and datasets (PySyft's restart trap, see NOTES).

PySyft reads ``SERVER_PRIVATE_KEY`` and ``DEFAULT_ROOT_*`` when ``syft.server``
is imported, so the environment is set before the first syft import, and those
secrets leave ``os.environ`` right after it: medsyft's own approved job code runs in
this process (custom code runs in a sandbox, :mod:`domains.site.sandbox`) and must not find
them there either. They come from DIR's 0600 files, never from the environment
the process was started with, so ``/proc/PID/environ`` holds none of them either.
"""

from __future__ import annotations

import argparse
import os
import sys

from domains.errors import DeployError
from domains.site.datadir import AUDIT_FILE, DataDir

# PySyft's start-up secrets: read once when syft.server is imported, then removed.
SECRET_VARIABLES = ("SERVER_PRIVATE_KEY", "DEFAULT_ROOT_EMAIL", "DEFAULT_ROOT_PASSWORD",
                    "DEFAULT_ROOT_USERNAME")
# Names that look like someone's secret in the deploying shell; the datasite never inherits them.
SECRET_MARKERS = ("PASSWORD", "SECRET", "PRIVATE_KEY", "TOKEN", "CREDENTIAL", "API_KEY")


def inherited_environment(environ: dict[str, str]) -> dict[str, str]:
    """*environ* without secrets, for starting a datasite: approved code runs in that process
    and can read its environment, and ``/proc/PID/environ`` keeps the start-up one for good."""
    return {name: value for name, value in environ.items()
            if name not in SECRET_VARIABLES
            and not any(marker in name.upper() for marker in SECRET_MARKERS)}


def server_environment(data_dir: DataDir) -> dict[str, str]:
    """Environment variables that make PySyft run as the datasite stored in *data_dir*."""
    config = data_dir.read_config()
    creds = data_dir.read_credentials()
    data_dir.tmp_dir.mkdir(parents=True, exist_ok=True)
    return {
        "SERVER_PRIVATE_KEY": data_dir.read_server_key(),
        "SERVER_UID": config.server_uid,
        "SERVER_NAME": config.name,
        "DEFAULT_ROOT_EMAIL": creds.email,
        "DEFAULT_ROOT_PASSWORD": creds.password,
        "DEFAULT_ROOT_USERNAME": f"{config.name} data owner",
        "TMPDIR": str(data_dir.tmp_dir),
        # Approved medsyft code reads its training store and ledger from here.
        "MEDSYFT_DATA_DIR": str(data_dir.path),
        "SYFT_NAME": config.name,
        "SYFT_DB_URL": data_dir.db_url,
        "SYFT_SERVER_TYPE": "datasite",
        "SYFT_RESET": "False",
        "SYFT_DEV_MODE": "False",
        "SYFT_N_CONSUMERS": "0",
        "SYFT_IN_MEMORY_WORKERS": "True",
        # PySyft otherwise tries to export traces to a collector that does not exist here.
        "TRACING": "False",
    }


def serve(data_dir: DataDir, *, forked: bool = False) -> None:
    """Serve until terminated (SIGTERM/SIGINT stop uvicorn cleanly).

    *forked*: this process is a child of :mod:`domains.site.launcher`, which imported PySyft
    before any datasite existed; PySyft's start-up secrets are set where it keeps what it read
    at import (:func:`adopt_identity`), and never enter ``os.environ``.
    """
    config = data_dir.read_config()
    if config.db:  # PySyft prints its connection string, password included: never into the log
        from domains.site import database
        database.redact_output(data_dir.db_password())
    environment = server_environment(data_dir)
    if forked:
        adopt_identity({name: environment.pop(name) for name in SECRET_VARIABLES}, environment["SERVER_UID"])
    os.environ.update(environment)
    import tempfile

    tempfile.tempdir = None  # re-read TMPDIR
    consume_secrets(data_dir)
    import uvicorn

    if config.db:
        from domains.site import database
        database.fix_pysyft_url_parsing()
        os.environ.update(database.tls_environment(config.db))  # PySyft drops the URL's query
    from domains.site import syft_speedups
    applied = syft_speedups.apply()
    print(f"medsyft: PySyft speed-ups: {', '.join(applied) or 'none'}", file=sys.stderr, flush=True)
    from domains.site import syft_policy
    policy = syft_policy.apply(data_dir)
    print(f"medsyft: site policy: {', '.join(policy)}", file=sys.stderr, flush=True)
    from domains.site import syft_guard
    guards = syft_guard.apply(data_dir.file(AUDIT_FILE))
    print(f"medsyft: PySyft access guards: {', '.join(guards)}", file=sys.stderr, flush=True)
    from domains.runtime import warm
    # the first job call would otherwise pay torch's, Opacus's and MONAI's imports; once serving,
    # so that they do not slow the start-up itself
    warm.start(serving=(config.host, config.port))

    from domains.site import tls
    if config.tls:
        print(f"medsyft: serving HTTPS with {data_dir.tls_dir}/server.crt; client certificates "
              f"{'required (mutual TLS)' if config.client_auth else 'not asked for'}",
              file=sys.stderr, flush=True)
    elif config.insecure_http:
        print(f"medsyft: WARNING: plain HTTP on {config.host}:{config.port} (--insecure-http): passwords "
              "and results cross the network unencrypted", file=sys.stderr, flush=True)
    if config.tls and config.client_auth:
        from domains.site import client_cert

        own = tls.certificate_name(data_dir)
        client_cert.enable(own)
        print(f"medsyft: logins bound to client certificates (the account's own, or this datasite's {own!r})",
              file=sys.stderr, flush=True)
    uvicorn.run(
        syft_guard.app_factory,
        host=config.host,
        port=config.port,
        factory=True,
        log_level="warning",
        # how long a stop lets a request in flight finish (idle connections are aborted at once,
        # domains.site.http_protocol)
        timeout_graceful_shutdown=3,
        **tls.uvicorn_options(data_dir, config),
    )


def adopt_identity(secrets: dict[str, str], server_uid: str) -> None:
    """What ``syft.server`` would have read from the environment at import, set after it was
    imported: this datasite's signing key, uid and root account (in a launcher's forked child)."""
    import syft.server.server as syft_server

    syft_server.signing_key_env = secrets["SERVER_PRIVATE_KEY"]
    syft_server.server_uid_env = server_uid
    defaults = syft_server.Server.__init__.__kwdefaults__  # bound when PySyft defined the class
    defaults.update(root_email=secrets["DEFAULT_ROOT_EMAIL"], root_username=secrets["DEFAULT_ROOT_USERNAME"],
                    root_password=secrets["DEFAULT_ROOT_PASSWORD"])
    syft_server.default_root_email = secrets["DEFAULT_ROOT_EMAIL"]
    syft_server.default_root_username = secrets["DEFAULT_ROOT_USERNAME"]
    syft_server.default_root_password = secrets["DEFAULT_ROOT_PASSWORD"]


def consume_secrets(data_dir: DataDir) -> None:
    """Let PySyft read its secrets (it does at import), then take them out of ``os.environ``."""
    import syft.server.server as syft_server

    if syft_server.signing_key_env != data_dir.read_server_key():
        raise DeployError("PySyft was imported before the datasite environment was set; "
                          "start the datasite with `python -m domains.site.server --data-dir DIR`")
    for name in SECRET_VARIABLES:
        os.environ.pop(name, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m domains.site.server", description=__doc__)
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args(argv)
    serve(DataDir(args.data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
