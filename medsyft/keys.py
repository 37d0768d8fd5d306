"""``medsyft keys init``: the key ceremony of a federation.

Run once, by whoever the hospitals trust to do it (ideally one of them, offline). With one
``--site NAME`` per hospital it makes the federation's roster: every hospital gets a signing key
(Ed25519) and a key-agreement key (X25519), and every kit carries all sites' public keys, so sites
can check each other's signed, masked updates (docs/privacy.md, "Verifiable secure aggregation").
It writes ``roster.json`` (public), the HE files and, per site, a kit folder ``NAME/`` with
``site-keys.medsyftkey`` and ``hospital-secret.medsyftkey`` (both 0600). Without ``--site`` it makes
the HE keys only: ``hospital-secret.medsyftkey`` (0600), which every hospital installs with
``medsyft domain deploy --he-key``, and ``orchestrator-public.medsyftkey``, which the data scientist
names in ``job.toml`` (``[privacy] he_public_key``); the public file holds no key at all.
"""

from __future__ import annotations

import argparse
from typing import Any


def cmd_init(args: argparse.Namespace) -> int:
    if args.site:
        return _init_federation(args)
    from privacy.he import init_keys

    secret, public, key_id = init_keys(args.out, overwrite=args.force)
    print(f"key {key_id} (BFV, N=4096, 128-bit security)")
    print(f"  for every hospital (keep secret, mode 0600): {secret}")
    print(f"  for the orchestrator (no secret key):        {public}")
    return 0


def _init_federation(args: argparse.Namespace) -> int:
    from privacy.ceremony import init_federation

    fed = init_federation(args.out, list(args.site), overwrite=args.force)
    roster = fed.roster
    print(f"federation {roster.federation_id[:8]}: {len(roster.sites)} sites, HE key {roster.he_key_id[:8]} "
          "(BFV, N=4096, 128-bit security)")
    print(f"roster fingerprint {roster.fingerprint}: read it to every hospital out of band")
    rows = [(f"to hospital {name} only (secret):", f"{folder}/") for name, folder in fed.kits.items()]
    rows.append(("to the orchestrator (public):", f"{fed.roster_path}, {fed.public_path}"))
    width = max(len(label) for label, _ in rows)
    for label, where in rows:
        print(f"  {label.ljust(width)} {where}")
    print("each hospital deploys with --he-key NAME/hospital-secret.medsyftkey --site-keys "
          "NAME/site-keys.medsyftkey; the job.toml names roster.json; once copied, delete the secrets here")
    return 0


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser("keys", help="key ceremony: HE keys and the federation's roster",
                                 description=__doc__.split("\n\n")[1])
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=type(keys))
    sub.required = True
    p = sub.add_parser("init", help="create a federation's keys (with --site: its roster and site kits)")
    p.add_argument("--out", required=True, help="folder for the key files (created 0700)")
    p.add_argument("--site", action="append", metavar="NAME",
                   help="a hospital of the federation (repeat once per site; its datasite name)")
    p.add_argument("--force", action="store_true", help="overwrite key files already there")
    p.set_defaults(handler=cmd_init)
