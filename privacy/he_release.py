"""The final model leaves only with every site's consent: the masks of a release.

To release the final model only with every site's consent, site i returns (r + m_i) mod t where r
are the plaintext residues (:meth:`HEContext.decrypt_sum_residues`) and m_i a mask with Σ m_i ≡ 0:
m_i = PRG(seed, job_id, n_sites, i) for i < n - 1 and m_{n-1} = -Σ m_i. The PRG is SHAKE-256 over
a domain tag, the 32-byte ``release_seed`` of the hospital key, n_sites, i and job_id; each 8-byte
output is reduced mod t (statistical distance from uniform < t / 2^64 < 2^-44 per value). The sum of
all n shares is n·r (mod t); t is prime, so r = n^-1 · Σ s_i. Any n - 1 shares miss one mask and
stay uniformly masked. A job_id must name one release: two releases under one job_id would reveal
the difference of their plaintexts. :func:`masked_residues` masks any residues every site holds
identically: a server optimizer's final model, which each site computed from the same sums.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from privacy.errors import HEError, NoSecretKey
from privacy.he_keys import MAX_PARTS, PLAIN_MODULUS, SECRET_FILE, is_int, signed_mean

if TYPE_CHECKING:  # privacy.he imports this module; the types only flow back
    from privacy.he import EncryptedVector, HEContext

_MASK_DOMAIN = b"medsyft/release-mask/v1\0"


def release_mask(ctx: HEContext, *, job_id: str, site_index: int, n_sites: int, length: int) -> np.ndarray:
    """Site ``site_index``'s mask (int64 residues mod t); the masks of sites 0..n_sites-1 sum to 0.

    With ``n_sites=1`` the mask is zero: a lone site releases in the clear, as it could anyway.
    """
    if ctx.release_seed is None:
        raise NoSecretKey(f"release masks need the hospital key ({SECRET_FILE}); key {ctx.key_id[:8]} here "
                          "is the orchestrator's public file")
    _check_release(job_id=job_id, site_index=site_index, n_sites=n_sites, length=length)
    if site_index < n_sites - 1:
        return _prg(ctx.release_seed, job_id=job_id, n_sites=n_sites, index=site_index, length=length)
    others = np.zeros(length, dtype=np.int64)
    for index in range(n_sites - 1):  # ≤ 127 values below 2^20 each: no int64 overflow
        others += _prg(ctx.release_seed, job_id=job_id, n_sites=n_sites, index=index, length=length)
    return (-others) % PLAIN_MODULUS


def release_share(ctx: HEContext, enc: EncryptedVector, *, job_id: str, site_index: int,
                  n_sites: int) -> np.ndarray:
    """What site ``site_index`` returns to release ``enc``: (plaintext residues + its mask) mod t."""
    return masked_residues(ctx, ctx.decrypt_sum_residues(enc), job_id=job_id, site_index=site_index,
                           n_sites=n_sites)


def masked_residues(ctx: HEContext, residues: np.ndarray, *, job_id: str, site_index: int,
                    n_sites: int) -> np.ndarray:
    """(residues + this site's mask) mod t, for residues every site holds identically.

    A decrypted sum is one such vector; a model every site computed itself from the same sums (a
    server optimizer's global model, quantized as a sum would be) is another: shares of identical
    residues, with masks that sum to zero, unmask to those residues.
    """
    values = np.asarray(residues)
    if values.ndim != 1 or values.dtype.kind not in "iu" or not values.size or values.min() < 0 \
            or values.max() >= PLAIN_MODULUS:
        raise HEError(f"residues must be a non-empty 1-D integer array in [0, {PLAIN_MODULUS})")
    mask = release_mask(ctx, job_id=job_id, site_index=site_index, n_sites=n_sites, length=values.size)
    return (values.astype(np.int64) + mask) % PLAIN_MODULUS


def _check_release(*, job_id: str, site_index: int, n_sites: int, length: int) -> None:
    if not (isinstance(job_id, str) and job_id):
        raise HEError(f"job_id must be a non-empty string (got {job_id!r})")
    if not (is_int(n_sites) and 1 <= n_sites <= MAX_PARTS):
        raise HEError(f"n_sites must be an int in [1, {MAX_PARTS}] (got {n_sites!r})")
    if not (is_int(site_index) and 0 <= site_index < n_sites):
        raise HEError(f"site_index must be an int in [0, {n_sites - 1}] (got {site_index!r})")
    if not (is_int(length) and length >= 1):
        raise HEError(f"length must be an int ≥ 1 (got {length!r})")


def _prg(seed: bytes, *, job_id: str, n_sites: int, index: int, length: int) -> np.ndarray:
    """SHAKE-256 stream for one (job, n_sites, index); fixed-width fields first keep inputs unambiguous."""
    stream = hashlib.shake_256(_MASK_DOMAIN + seed + struct.pack(">II", n_sites, index) + job_id.encode())
    words = np.frombuffer(stream.digest(8 * length), dtype="<u8")
    return (words % np.uint64(PLAIN_MODULUS)).astype(np.int64)


def unmask_release(shares: Sequence[np.ndarray], *, plain_modulus: int, scale: int, weight_sum: float,
                   n_sites: int) -> np.ndarray:
    """Sum all ``n_sites`` shares mod t (= n_sites · residues), divide by n_sites mod t, give the mean."""
    if not (is_int(n_sites) and n_sites >= 1) or len(shares) != n_sites:
        raise HEError(f"unmasking needs all {n_sites!r} shares, got {len(shares)}: the masks cancel only "
                      "in the sum of every site's share")
    if not (is_int(plain_modulus) and n_sites < plain_modulus < 2**31):
        raise HEError(f"plain_modulus must be a prime int in ({n_sites}, 2^31) (got {plain_modulus!r})")
    if not (is_int(scale) and scale >= 1 and isinstance(weight_sum, float | int) and weight_sum > 0):
        raise HEError(f"scale must be an int ≥ 1 and weight_sum > 0 (got {scale!r}, {weight_sum!r}); "
                      "take both from the EncryptedVector that was released")
    total = np.zeros(_share(shares[0], plain_modulus).size, dtype=np.int64)
    for share in shares:
        total += _share(share, plain_modulus, length=total.size)
    try:
        inverse = pow(n_sites, -1, plain_modulus)
    except ValueError as exc:
        raise HEError(f"plain_modulus {plain_modulus} is not prime to n_sites {n_sites}") from exc
    residues = total % plain_modulus * inverse % plain_modulus
    return signed_mean(residues, plain_modulus=plain_modulus, scale=scale, weight_sum=weight_sum)


def _share(share: object, plain_modulus: int, *, length: int | None = None) -> np.ndarray:
    values = np.asarray(share)
    if values.ndim != 1 or values.dtype.kind not in "iu" or (length is not None and values.size != length):
        raise HEError(f"each share must be a 1-D integer array of the same length (got {values.dtype} "
                      f"with shape {values.shape})")
    if values.size and (values.min() < 0 or values.max() >= plain_modulus):
        raise HEError(f"share values must be residues in [0, {plain_modulus})")
    return values.astype(np.int64, copy=False)
