"""The datasite process: one PySyft 0.9.5 datasite serving one data directory.

Run as ``python -m domains.server --data-dir DIR``; ``medsyft domain deploy``
starts it (in the foreground or detached). Everything PySyft would put under the
system temp dir goes under DIR instead, and the identity PySyft would generate
afresh each start (signing key, server uid) is read from DIR, which is what makes
a restart see its own users and datasets (PySyft's restart trap, see NOTES).

PySyft reads ``SERVER_PRIVATE_KEY`` and ``DEFAULT_ROOT_*`` when ``syft.server``
is imported, so the environment is set before the first syft import.
"""

from __future__ import annotations

import argparse
import os
import sys

from domains.datadir import DataDir


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


def serve(data_dir: DataDir) -> None:
    """Serve until terminated (SIGTERM/SIGINT stop uvicorn cleanly)."""
    config = data_dir.read_config()
    os.environ.update(server_environment(data_dir))
    import tempfile

    tempfile.tempdir = None  # re-read TMPDIR
    import uvicorn

    from domains import syft_speedups

    applied = syft_speedups.apply()
    print(f"medsyft: PySyft speed-ups: {', '.join(applied) or 'none'}", file=sys.stderr, flush=True)

    uvicorn.run(
        "syft.server.uvicorn:app_factory",
        host=config.host,
        port=config.port,
        factory=True,
        log_level="warning",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m domains.server", description=__doc__)
    parser.add_argument("--data-dir", required=True)
    args = parser.parse_args(argv)
    serve(DataDir(args.data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
