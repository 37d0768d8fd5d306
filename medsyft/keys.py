"""``medsyft keys init``: the HE key ceremony of a federation.

Run once, by whoever the hospitals trust to do it (ideally one of them, offline). It
writes two files: ``hospital-secret.medsyftkey`` (0600), which every hospital installs
with ``medsyft domain deploy --he-key``, and ``orchestrator-public.medsyftkey``, which
the data scientist names in ``job.toml`` (``[privacy] he_public_key``). The public file
holds no secret key and no evaluation keys: adding ciphertexts needs none.
"""

from __future__ import annotations

import argparse
from typing import Any


def cmd_init(args: argparse.Namespace) -> int:
    from privacy.he import init_keys

    secret, public, key_id = init_keys(args.out, overwrite=args.force)
    print(f"key {key_id} (BFV, N=4096, 128-bit security)")
    print(f"  for every hospital (keep secret, mode 0600): {secret}")
    print(f"  for the orchestrator (no secret key):        {public}")
    return 0


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="HE key ceremony for encrypted aggregation",
                                 description=__doc__.split("\n\n")[1])
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=type(keys))
    sub.required = True
    p = sub.add_parser("init", help="create a federation's HE keys")
    p.add_argument("--out", required=True, help="folder for the two key files (created 0700)")
    p.add_argument("--force", action="store_true", help="overwrite key files already there")
    p.set_defaults(handler=cmd_init)
