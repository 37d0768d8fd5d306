"""The encrypted-FedAvg key scheme and its key files: the ceremony and the loader.

Why these parameters (BFV, N = 4096, coefficient primes of 32 + 32 bits, t = 1032193):

* 128-bit security. The HomomorphicEncryption.org standard allows log2 q ≤ 109 for N = 4096 at
  128-bit classical security; here log2 q = 64. The special (last) prime counts in that total.
* Wire cost. A ciphertext travels at the data level, where only the first prime is left, so it is
  2 · 4096 coefficients of 32 bits, about 8.3 bytes per parameter after TenSEAL's serialization
  (≈ 2.1 × float32). A 32-bit prime costs the same bytes as a 30-bit one (both take four bytes).
* Noise. Sums of many ciphertexts must still decrypt. Measured with SEAL's invariant noise budget:
  [30, 30] with public-key encryption leaves 2-3 bits fresh and 0 after 16-32 additions (a sum of
  128 decrypted wrongly), so it is not used. Symmetric encryption with [32, 32] leaves 7 bits
  fresh and 3-4 bits after summing 128 ciphertexts, the most :data:`MAX_PARTS` allows.
* Symmetric encryption. Every party that encrypts (a hospital) holds the secret key anyway, so no
  public key is made: fresh noise is smaller and the hospital file is ~34 KB instead of ~100 KB.
* t = 1032193 is prime and ≡ 1 (mod 2N), so 4096 values batch into one ciphertext, and it gives
  about 2^17 fixed-point steps per unit of a weight bounded by 4 (see :mod:`privacy.he`).

The ceremony writes two files with the same random ``key_id``: ``hospital-secret.medsyftkey``
(mode 0600: the secret key and a 32-byte ``release_seed`` for release masks) and
``orchestrator-public.medsyftkey`` (0644: parameters only; no secret, public, Galois or
relinearization key, because an aggregator that only adds ciphertexts needs none of them).

File layout: ``MAGIC``, a 4-byte big-endian header length, a JSON header (format, key_id, role,
params, release_seed, body_sha256) and TenSEAL's serialized context as the body.

Release masks: :mod:`privacy.he_release`.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tenseal as ts  # type: ignore[import-untyped, unused-ignore]

from privacy.durable import atomic_write
from privacy.errors import HEError

if TYPE_CHECKING:  # privacy.he imports this module; the types only flow back
    pass

POLY_MODULUS_DEGREE = 4096
COEFF_MOD_BIT_SIZES = (32, 32)
PLAIN_MODULUS = 1032193
MARGIN = 64  # fixed-point headroom: |sum of rounding errors| ≤ MAX_PARTS / 2 = MARGIN
MAX_PARTS = 128  # site contributions one ciphertext may sum (wrap-around margin and noise budget)

KEY_SCHEME: dict[str, Any] = {
    "scheme": "BFV",
    "poly_modulus_degree": POLY_MODULUS_DEGREE,
    "coeff_mod_bit_sizes": list(COEFF_MOD_BIT_SIZES),
    "plain_modulus": PLAIN_MODULUS,
    "encryption": "symmetric",
    "security": "128-bit classical: log2 q = 64 <= 109 for N = 4096 (HomomorphicEncryption.org standard)",
    "encoding": "fixed point: clamp to ±bound, pre-multiply by the FedAvg weight, round",
    "margin": MARGIN,
    "max_parts": MAX_PARTS,
}

SECRET_FILE = "hospital-secret.medsyftkey"  # noqa: S105 (a file name)
PUBLIC_FILE = "orchestrator-public.medsyftkey"
ROLE_SECRET = "hospital-secret"  # noqa: S105 (a role name)
ROLE_PUBLIC = "orchestrator-public"
MAGIC = b"MEDSYFT-HE-KEY\n"
_FORMAT = 1
_SEED_BYTES = 32
_N_THREADS = max(1, os.cpu_count() or 1)
_FIX = "copy it again from the key ceremony's output (privacy.he.init_keys)"


def scheme_params() -> dict[str, Any]:
    """The parameters a key file records and a loader insists on (a fresh copy)."""
    keys = ("scheme", "poly_modulus_degree", "coeff_mod_bit_sizes", "plain_modulus", "encryption")
    return {k: (list(KEY_SCHEME[k]) if k == "coeff_mod_bit_sizes" else KEY_SCHEME[k]) for k in keys}


@dataclass(frozen=True)
class KeyFile:
    """A parsed key file: the header's facts and the live TenSEAL context."""

    key_id: str
    role: str
    params: dict[str, Any]
    context: Any = field(repr=False, compare=False)
    release_seed: bytes | None = field(default=None, repr=False, compare=False)


def new_tenseal_context() -> Any:
    """A fresh BFV context of :data:`KEY_SCHEME` with a new secret key and nothing else."""
    return ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=POLY_MODULUS_DEGREE,
                      plain_modulus=PLAIN_MODULUS, coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES),
                      encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC, n_threads=_N_THREADS)


def init_keys(out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> tuple[Path, Path, str]:
    """Key ceremony: write the hospital (secret) and orchestrator (public) key files to ``out_dir``.

    Refuses to replace existing files unless ``overwrite=True``; creates ``out_dir`` (mode 0700)
    if missing. Returns ``(secret_path, public_path, key_id)``.
    """
    out = Path(out_dir)
    secret_path, public_path = out / SECRET_FILE, out / PUBLIC_FILE
    for path in (secret_path, public_path):
        if path.exists() and not overwrite:
            raise HEError(f"{path} already exists; keep it, or pass overwrite=True "
                          "(`medsyft keys init --force`) to make new keys (ciphertexts made under the old "
                          "key can then no longer be decrypted)")
    _make_private_dir(out)
    key_id, seed, context = secrets.token_hex(16), secrets.token_bytes(_SEED_BYTES), new_tenseal_context()
    atomic_write(secret_path, _encode(context, key_id=key_id, role=ROLE_SECRET, seed=seed), mode=0o600)
    atomic_write(public_path, _encode(context, key_id=key_id, role=ROLE_PUBLIC, seed=None), mode=0o644)
    return secret_path, public_path, key_id


def _encode(context: Any, *, key_id: str, role: str, seed: bytes | None) -> bytes:
    secret = role == ROLE_SECRET
    body: bytes = context.serialize(save_public_key=False, save_secret_key=secret,
                                    save_galois_keys=False, save_relin_keys=False)
    header = {"format": _FORMAT, "key_id": key_id, "role": role, "params": scheme_params(),
              "release_seed": seed.hex() if seed else None, "body_sha256": hashlib.sha256(body).hexdigest()}
    raw = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack(">I", len(raw)) + raw + body


def _make_private_dir(out: Path) -> None:
    if out.is_dir():
        return
    try:
        out.mkdir(parents=True, mode=0o700)
        out.chmod(0o700)  # mkdir's mode is filtered by the umask
    except OSError as exc:
        raise HEError(f"{out}: cannot create the key directory ({exc.strerror}); choose another out_dir"
                      ) from exc


def read_key_file(path: str | os.PathLike[str]) -> KeyFile:
    """Parse a key file; :class:`HEError` naming the path and the fix for anything wrong with it."""
    where = Path(path)
    try:
        data = where.read_bytes()
    except FileNotFoundError as exc:
        raise HEError(f"{where}: no such key file; give the path to {SECRET_FILE} or {PUBLIC_FILE} "
                      "from the key ceremony (privacy.he.init_keys)") from exc
    except OSError as exc:
        raise HEError(f"{where}: cannot read the key file ({exc.strerror}); check the path and its "
                      "permissions") from exc
    key = read_key_bytes(data, source=str(where))
    if key.role == ROLE_SECRET and where.stat().st_mode & 0o077:
        warnings.warn(f"{where} holds the secret key but others may read it; chmod 600 {where}",
                      stacklevel=2)
    return key


def read_key_bytes(data: bytes, *, source: str = "<bytes>") -> KeyFile:
    """Parse the bytes of a key file; ``source`` names it in error messages."""
    if not isinstance(data, bytes | bytearray | memoryview) or not bytes(data).startswith(MAGIC):
        raise HEError(f"{source}: not a medsyft key file; use {SECRET_FILE} or {PUBLIC_FILE} "
                      "from the key ceremony (privacy.he.init_keys)")
    header, body = _split(bytes(data), source)
    seed = _check_header(header, body, source)
    try:
        context = ts.context_from(body, n_threads=_N_THREADS)
    except Exception as exc:  # TenSEAL raises ValueError or RuntimeError on a bad stream
        raise HEError(f"{source}: corrupt key file (TenSEAL cannot load it: {exc}); {_FIX}") from exc
    _check_keys(context, header["role"], source)
    return KeyFile(key_id=header["key_id"], role=header["role"], params=header["params"],
                   context=context, release_seed=seed)


def _split(data: bytes, source: str) -> tuple[dict[str, Any], bytes]:
    start = len(MAGIC) + 4
    if len(data) < start:
        raise HEError(f"{source}: corrupt key file (truncated header); {_FIX}")
    (size,) = struct.unpack(">I", data[len(MAGIC):start])
    try:
        header = json.loads(data[start:start + size].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HEError(f"{source}: corrupt key file (unreadable header); {_FIX}") from exc
    if not isinstance(header, dict):
        raise HEError(f"{source}: corrupt key file (header is not an object); {_FIX}")
    return header, data[start + size:]


def _check_header(header: dict[str, Any], body: bytes, source: str) -> bytes | None:
    """Validate the header against the body and the scheme; return the release seed, if any."""
    if header.get("format") != _FORMAT or header.get("role") not in (ROLE_SECRET, ROLE_PUBLIC):
        raise HEError(f"{source}: unsupported key file (format {header.get('format')!r}, role "
                      f"{header.get('role')!r}); make new keys with this medsyft's privacy.he.init_keys")
    if header.get("body_sha256") != hashlib.sha256(body).hexdigest():
        raise HEError(f"{source}: corrupt key file (checksum mismatch: truncated or altered); {_FIX}")
    if header.get("params") != scheme_params():
        raise HEError(f"{source}: key made for {header.get('params')}, but this medsyft uses "
                      f"{scheme_params()}; make new keys with privacy.he.init_keys")
    key_id = header.get("key_id")
    if not (isinstance(key_id, str) and len(key_id) == 32 and set(key_id) <= set("0123456789abcdef")):
        raise HEError(f"{source}: corrupt key file (bad key_id {key_id!r}); {_FIX}")
    return _seed_of(header, source)


def _seed_of(header: dict[str, Any], source: str) -> bytes | None:
    raw = header.get("release_seed")
    if header["role"] == ROLE_PUBLIC:
        if raw is not None:
            raise HEError(f"{source}: a public key file must not carry the release seed; {_FIX}")
        return None
    try:
        seed = bytes.fromhex(str(raw))
    except ValueError:
        seed = b""
    if len(seed) != _SEED_BYTES:
        raise HEError(f"{source}: corrupt key file (release seed is not {_SEED_BYTES} bytes); {_FIX}")
    return seed


def _check_keys(context: Any, role: str, source: str) -> None:
    """The keys inside the TenSEAL context must match the role the header claims."""
    extra = context.has_galois_keys() or context.has_relin_keys()
    if extra or context.has_secret_key() != (role == ROLE_SECRET):
        raise HEError(f"{source}: the keys inside do not match its role {role!r}; {_FIX}")


def signed_mean(residues: np.ndarray, *, plain_modulus: int, scale: int, weight_sum: float) -> np.ndarray:
    """Residues above (t - 1) / 2 are negative; divide by scale and summed weight, as float32."""
    centred = np.where(residues > (plain_modulus - 1) // 2, residues - plain_modulus, residues)
    return (centred / (scale * weight_sum)).astype(np.float32)


def is_int(value: object) -> bool:
    """An int that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)
