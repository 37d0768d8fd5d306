"""``medsyft federation init | add-site | add-scientist``: provision a federation's kits in one ceremony.

``init`` runs the key ceremony of ``medsyft keys init --site`` (HE keys, roster, signing keys) and,
in the same step, makes the federation's certificate authority and issues every certificate::

    DIR/                              (0700) keep it offline; it can issue certificates
      ca/ca.key                       (0600) the federation CA's key
      ca/ca.crt                       the CA certificate everyone trusts
      federation.json                 the sites (name, host, port) and scientists issued so far
      roster.json, orchestrator-public.medsyftkey, hospital-secret.medsyftkey   (the key ceremony)
      NAME/                           (0700) hospital NAME's kit: copy it to NAME's host only
        server.crt, server.key        its HTTPS certificate (for HOST) and key (0600)
        ca.crt                        the CA: its datasite accepts only clients with a certificate from it
        hospital-secret.medsyftkey    the shared HE secret key (0600)
        site-keys.medsyftkey          its signing and key-agreement keys, with the roster (0600)
        README.txt                    what goes where, and the deploy command
      scientist/                      the data scientist's kit
        client.crt, client.key        the scientist's client certificate (mutual TLS) and key (0600)
        ca.crt, orchestrator-public.medsyftkey, roster.json
        job.toml                      a skeleton with the sites' https:// URLs and the files above
        README.txt

``add-site NAME=HOST[:PORT]`` issues a kit for a hospital that joins later (the roster grows, and
the kits still in DIR get the new roster); ``add-site ... --renew`` re-issues an existing site's
certificate (a new host, or before it expires). ``add-scientist EMAIL`` issues another scientist's
kit. Certificates last ``--days`` (default 365); the CA lasts a year longer than the first ones.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from privacy import pki
from privacy.durable import atomic_write
from privacy.errors import PKIError, RosterError

DEFAULT_PORT = 8443
FEDERATION_FILE = "federation.json"
SCIENTIST_DIR = "scientist"
_RESERVED = ("ca", SCIENTIST_DIR)
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def parse_site(text: str) -> tuple[str, str, int]:
    """``NAME=HOST[:PORT]`` (an IPv6 HOST in brackets) -> (name, host, port)."""
    name, sep, where = text.partition("=")
    if not sep or not name or not where:
        raise PKIError(f"--site {text!r}: write NAME=HOST[:PORT], e.g. st-mary=st-mary.hospital.example:8443")
    port = DEFAULT_PORT
    if where.startswith("["):
        host, _, rest = where[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], text)
    elif where.count(":") == 1:
        host, _, raw = where.partition(":")
        port = _port(raw, text)
    else:
        host = where
    if name in _RESERVED:
        raise PKIError(f"--site {text!r}: {name!r} is the name of a kit folder; choose another site name")
    return name, pki.check_host(host), port


def _port(raw: str, text: str) -> int:
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise PKIError(f"--site {text!r}: the port must be a number in 1..65535")
    return int(raw)


def _url(host: str, port: int) -> str:
    return f"https://{f'[{host}]' if ':' in host else host}:{port}"


def _check_email(email: str) -> str:
    if not _EMAIL_RE.match(email):
        raise PKIError(f"--scientist {email!r} is not an e-mail address; give the scientist's account e-mail")
    return email


# -- the ceremony ----------------------------------------------------------------------------------
def init(out: Path, sites: list[str], scientist: str, *, days: int = pki.DEFAULT_DAYS) -> dict[str, Any]:
    """Write every kit of a new federation into *out*; refuses an *out* that exists and is not empty."""
    from privacy.ceremony import init_federation

    parsed = [parse_site(s) for s in sites]
    _check_email(scientist)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PKIError(f"{out} already exists and is not empty; a federation is provisioned once. Use "
                       "`medsyft federation add-site` to add a hospital, or choose a new --out")
    if not parsed:
        raise PKIError("a federation needs at least one --site NAME=HOST[:PORT]")
    fed = init_federation(out, [name for name, _, _ in parsed])
    ca_key, ca_cert = pki.new_ca(f"medsyft federation {fed.roster.federation_id[:8]}",
                                 days=days + pki.CA_DAYS_MARGIN)
    (out / "ca").mkdir(mode=0o700)
    pki.write_key(out / "ca" / "ca.key", ca_key)
    pki.write_cert(out / "ca" / "ca.crt", ca_cert)
    record: dict[str, Any] = {"federation_id": fed.roster.federation_id, "days": days,
              "sites": [{"name": n, "host": h, "port": p} for n, h, p in parsed], "scientists": []}
    for name, host, port in parsed:
        _issue_site(out, name, host, port, days)
    record["scientists"].append(_issue_scientist(out, SCIENTIST_DIR, scientist, days, record))
    _write_record(out, record)
    return record


def add_site(out: Path, site: str, *, renew: bool = False, days: int | None = None) -> dict[str, Any]:
    """Issue a kit for a new site (the roster grows) or, with *renew*, a new certificate for one."""
    record = _read_record(out)
    name, host, port = parse_site(site)
    days = days or int(record["days"])
    known = {s["name"]: s for s in record["sites"]}
    if renew:
        if name not in known:
            raise PKIError(f"site {name!r} is not in this federation ({', '.join(known)}); drop --renew to "
                           "add it")
        _issue_site(out, name, host, port, days)
        known[name].update(host=host, port=port)
    else:
        if name.lower() in {n.lower() for n in known}:
            raise PKIError(f"site {name!r} is already in this federation; pass --renew to re-issue its "
                           "certificate")
        _grow_roster(out, name)
        _issue_site(out, name, host, port, days)
        record["sites"].append({"name": name, "host": host, "port": port})
    _write_record(out, record)
    for entry in record["scientists"]:  # every scientist's job.toml lists the sites as they now are
        _write_job_skeleton(out / entry["folder"], entry["email"], record)
    return record


def add_scientist(out: Path, email: str, *, days: int | None = None) -> dict[str, Any]:
    record = _read_record(out)
    _check_email(email)
    if email in {s["email"] for s in record["scientists"]}:
        raise PKIError(f"{email} already has a kit in {out}; give another e-mail address")
    folder = f"{SCIENTIST_DIR}-{re.sub(r'[^A-Za-z0-9.-]', '_', email)}"
    record["scientists"].append(_issue_scientist(out, folder, email, days or int(record["days"]), record))
    _write_record(out, record)
    return record


def _ca(out: Path) -> tuple[Any, Any]:
    try:
        return pki.load_key(out / "ca" / "ca.key"), pki.load_cert(out / "ca" / "ca.crt")
    except PKIError as exc:
        raise PKIError(f"{out} holds no federation CA ({exc}); give the --out of `medsyft federation init`"
                       ) from exc


def _issue_site(out: Path, name: str, host: str, port: int, days: int) -> None:
    ca_key, ca_cert = _ca(out)
    key, cert = pki.issue(ca_key, ca_cert, common_name=name, hosts=(host,), server=True, client=True,
                          days=days)
    kit = out / name
    kit.mkdir(mode=0o700, exist_ok=True)
    kit.chmod(0o700)
    pki.write_key(kit / "server.key", key)
    pki.write_cert(kit / "server.crt", cert)
    pki.write_cert(kit / "ca.crt", ca_cert)
    atomic_write(kit / "README.txt", _site_readme(name, host, port, cert), mode=0o644)


def _issue_scientist(out: Path, folder: str, email: str, days: int, record: dict[str, Any]) -> dict[str, str]:
    ca_key, ca_cert = _ca(out)
    key, cert = pki.issue(ca_key, ca_cert, common_name=email, server=False, client=True, days=days)
    kit = out / folder
    kit.mkdir(mode=0o700, exist_ok=True)
    pki.write_key(kit / "client.key", key)
    pki.write_cert(kit / "client.crt", cert)
    pki.write_cert(kit / "ca.crt", ca_cert)
    for public in ("orchestrator-public.medsyftkey", "roster.json"):
        atomic_write(kit / public, (out / public).read_bytes(), mode=0o644)
    entry = {"email": email, "folder": folder}
    _write_job_skeleton(kit, email, {**record, "scientists": [*record["scientists"], entry]})
    return entry


def _grow_roster(out: Path, name: str) -> None:
    """Add *name* to the roster; every kit still in DIR is rewritten with the new roster."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from privacy.roster import (
        ROSTER_FILE,
        SITE_KEYS_FILE,
        SiteKit,
        canonical_json,
        load_roster,
        load_site_kit,
        new_roster,
        site_entry,
    )

    roster = load_roster(out / ROSTER_FILE)
    secret = out / "hospital-secret.medsyftkey"
    kits = {n: out / n / SITE_KEYS_FILE for n in roster.names}
    gone = [n for n, path in kits.items() if not path.exists()]
    if gone or not secret.exists():
        missing = ", ".join(f"{n}/{SITE_KEYS_FILE}" for n in gone) or secret.name
        raise RosterError(f"{out} no longer holds {missing}: a new site changes the roster every site "
                          "carries, so add it where the ceremony's secrets are kept, or provision anew")
    signing, agreement = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
    grown = new_roster(federation_id=roster.federation_id, he_key_id=roster.he_key_id,
                       sites=[*roster.sites, site_entry(name, signing, agreement)])
    old = {n: load_site_kit(path) for n, path in kits.items()}
    new_kits = {n: SiteKit(site=n, roster=grown, _signing=k._signing, _agreement=k._agreement)
                for n, k in old.items()}
    new_kits[name] = SiteKit(site=name, roster=grown, _signing=signing, _agreement=agreement)
    (out / name).mkdir(mode=0o700, exist_ok=True)
    for n, kit in new_kits.items():
        atomic_write(out / n / SITE_KEYS_FILE, canonical_json(kit.to_dict()) + b"\n", mode=0o600)
    atomic_write(out / name / secret.name, secret.read_bytes(), mode=0o600)
    atomic_write(out / ROSTER_FILE, canonical_json(grown.to_dict()) + b"\n", mode=0o644)
    for scientist in _read_record(out)["scientists"]:
        atomic_write(out / scientist["folder"] / ROSTER_FILE, (out / ROSTER_FILE).read_bytes(), mode=0o644)


def _read_record(out: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((out / FEDERATION_FILE).read_text()))
    except (OSError, ValueError) as exc:
        raise PKIError(f"{out} is not a federation folder (no readable {FEDERATION_FILE}); give the --out "
                       "of `medsyft federation init`") from exc


def _write_record(out: Path, record: dict[str, Any]) -> None:
    atomic_write(out / FEDERATION_FILE, json.dumps(record, indent=2) + "\n", mode=0o644)


def _env_name(site: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", site.upper()) + "_PASSWORD"


def _write_job_skeleton(kit: Path, email: str, record: dict[str, Any]) -> None:
    sites = "".join(
        f'\n[[sites]]\nname = "{s["name"]}"\nurl = "{_url(s["host"], s["port"])}"\nemail = "{email}"\n'
        f'password_env = "{_env_name(s["name"])}"   # the password {s["name"]} gave you\n'
        for s in record["sites"])
    text = (f"# job.toml of federation {record['federation_id'][:8]}, from `medsyft federation init`.\n"
            "# Every site is HTTPS: its certificate is checked against ca_file, and this kit's client\n"
            "# certificate proves to each datasite that you belong to the federation (mutual TLS).\n"
            '[job]\ndataset = "chest-xray"\nrounds = 3\nrun_dir = "runs/federation"\n\n'
            '[tls]\nca_file = "ca.crt"\nclient_cert = "client.crt"\nclient_key = "client.key"\n'
            f"{sites}\n"
            '[privacy]\nhe_public_key = "orchestrator-public.medsyftkey"\nroster = "roster.json"\n')
    atomic_write(kit / "job.toml", text, mode=0o644)


def _site_readme(name: str, host: str, port: int, cert: Any) -> str:
    return (
        f"Kit of hospital {name} (federation certificate for {host}, valid until "
        f"{cert.not_valid_after_utc:%Y-%m-%d}).\n\n"
        f"Copy this folder to {name}'s datasite host only, readable by the account that runs it\n"
        "(server.key, hospital-secret.medsyftkey and site-keys.medsyftkey are secret), then:\n\n"
        f"    medsyft domain deploy --data-dir /srv/medsyft/{name} --name {name} --kit THIS_FOLDER \\\n"
        f"        --host {_bind(host)} --port {port} --detach\n\n"
        f"Open TCP port {port} to the scientists' hosts. The datasite serves HTTPS only and refuses\n"
        "clients without a certificate from ca.crt. deploy copies the files into the data directory;\n"
        "after that the kit can be stored offline. To renew: `medsyft federation add-site "
        f"{name}=HOST:PORT --renew`\nwhere the federation was provisioned, then deploy again with the new "
        "kit.\n"
    )


def _bind(host: str) -> str:
    """The --host a kit's README suggests: its own loopback address, else every address."""
    return host if host in ("127.0.0.1", "localhost", "::1") else "0.0.0.0"  # noqa: S104


# -- CLI ---------------------------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    out = Path(args.out)
    record = init(out, list(args.site or []), args.scientist, days=args.days)
    roster = json.loads((out / "roster.json").read_text())
    print(f"federation {record['federation_id'][:8]}: {len(record['sites'])} sites, CA {out}/ca/ca.crt, "
          f"certificates valid {args.days} days")
    print(f"roster fingerprint {roster['fingerprint']}: read it to every hospital out of band")
    for s in record["sites"]:
        print(f"  to hospital {s['name']} only (secret): {out}/{s['name']}/  ({_url(s['host'], s['port'])})")
    print(f"  to the data scientist {args.scientist}:   {out}/{SCIENTIST_DIR}/  (job.toml inside)")
    print(f"keep {out}/ca/ offline: it can issue certificates the federation trusts")
    return 0


def cmd_add_site(args: argparse.Namespace) -> int:
    out = Path(args.out)
    record = add_site(out, args.site, renew=args.renew, days=args.days)
    name = parse_site(args.site)[0]
    print(f"{'re-issued' if args.renew else 'issued'} the kit of {name}: {out}/{name}/ "
          f"({len(record['sites'])} sites)")
    if not args.renew:
        print("the roster changed: every hospital deploys again with its new NAME/site-keys.medsyftkey, "
              "and scientists use the new roster.json")
    return 0


def cmd_add_scientist(args: argparse.Namespace) -> int:
    out = Path(args.out)
    record = add_scientist(out, args.email, days=args.days)
    print(f"issued the kit of {args.email}: {out}/{record['scientists'][-1]['folder']}/")
    return 0


def register(subparsers: Any) -> None:
    fed = subparsers.add_parser("federation", help="provision a federation: CA, certificates, kits",
                                description=__doc__.split("\n\n")[0])
    sub = fed.add_subparsers(dest="federation_command", metavar="ACTION", parser_class=type(fed))
    sub.required = True
    p = sub.add_parser("init", help="make the CA, the key ceremony and every site's and the scientist's kit")
    p.add_argument("--out", required=True, help="a new folder for the federation (created 0700)")
    p.add_argument("--site", action="append", metavar="NAME=HOST[:PORT]",
                   help=f"a hospital and the host scientists dial (repeat; port default {DEFAULT_PORT})")
    p.add_argument("--scientist", required=True, metavar="EMAIL", help="the data scientist's e-mail")
    p.add_argument("--days", type=int, default=pki.DEFAULT_DAYS,
                   help=f"certificate lifetime in days (default {pki.DEFAULT_DAYS})")
    p.set_defaults(handler=cmd_init)
    p = sub.add_parser("add-site", help="issue a kit for a new hospital, or --renew one's certificate")
    p.add_argument("--out", required=True, help="the folder of `medsyft federation init`")
    p.add_argument("site", metavar="NAME=HOST[:PORT]")
    p.add_argument("--renew", action="store_true", help="re-issue an existing site's certificate")
    p.add_argument("--days", type=int, help="certificate lifetime (default: the federation's)")
    p.set_defaults(handler=cmd_add_site)
    p = sub.add_parser("add-scientist", help="issue another data scientist's kit")
    p.add_argument("--out", required=True, help="the folder of `medsyft federation init`")
    p.add_argument("email", metavar="EMAIL")
    p.add_argument("--days", type=int, help="certificate lifetime (default: the federation's)")
    p.set_defaults(handler=cmd_add_scientist)
