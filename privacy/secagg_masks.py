"""Pairwise masks in the plaintext ring Z_t that cancel in a round's sum (Bonawitz et al. 2017).

Seeds. Sites i and j share s_ij = X25519(i, j) (:meth:`privacy.roster.SiteKit.shared_secret`).
For one call of one job, :func:`call_seed` derives k_ij = HKDF-SHA256(s_ij, salt = roster
fingerprint, info = canonical JSON of (federation id, job id, call, the pair in roster order)).
A mask recovery reveals k_ij for that call only: HKDF is one-way, so it tells nothing about s_ij or
any other call's masks.

Masks. :func:`expand_mask` reads SHAKE-256(domain ‖ k_ij) as little-endian 32-bit words, keeps
their low 20 bits and accepts those below t = 1032193 < 2^20 (rejection sampling: acceptance
t / 2^20 ≈ 0.984), so every mask value is exactly uniform in Z_t. Site i's mask is
M_i = Σ_{j ≠ i} ε_ij · m_ij (mod t) over the round's sites, with ε_ij = +1 if i comes before j in
the roster and -1 after; ε_ij = -ε_ji, so Σ_i M_i ≡ 0 (mod t) over the round's site set.

Why the sum still decrypts exactly. Site i encrypts r_i = (q_i + M_i) mod t, where q_i is its signed
fixed-point part (:func:`privacy.he.quantize`). BFV adds modulo t, so the sum of the parts decrypts
to Σ r_i ≡ Σ q_i + Σ M_i ≡ Σ q_i (mod t), and SEAL's decoder returns the centred representative in
[-half, half]. :mod:`privacy.he` proves |Σ q_i| ≤ half for weights summing to at most 1 and at
most 128 parts, so that representative is Σ q_i itself: the masks change nothing in the proof or in
:func:`privacy.he.fedavg_tolerance`. When site k's part is missing, the survivors' masks leave
-Σ_{i ∈ survivors} ε_ik · m_ik; :func:`dropout_correction` adds it back mod t. The noise does not
change either: a batched plaintext's polynomial coefficients are spread over Z_t with or without
masks.

A single part: r_i is q_i plus M_i, and M_i contains m_ij for an honest j, uniform in Z_t and
independent of q_i, so r_i is uniform in Z_t whatever the update. A hospital that decrypts another's
part (all hospitals hold the HE secret key) sees noise unless it also knows every mask in M_i.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privacy.he_keys import PLAIN_MODULUS
from privacy.roster import Roster, SiteKit, canonical_json

SEED_BYTES = 32
_SEED_INFO = "medsyft/secagg/call-seed/v1"
_MASK_DOMAIN = b"medsyft/secagg/mask/v1\0"
_LOW_20_BITS = np.uint32((1 << 20) - 1)


def sign_of(roster: Roster, site: str, other: str) -> int:
    """ε: +1 if ``site`` comes before ``other`` in the roster, else -1."""
    return 1 if roster.index(site) < roster.index(other) else -1


def call_seed(kit: SiteKit, other: str, *, job_id: str, call: int) -> bytes:
    """k_ij for (job, call): the same 32 bytes at both sites of the pair, no one else can derive it."""
    roster = kit.roster
    pair = sorted((kit.site, other), key=roster.index)
    info = canonical_json([_SEED_INFO, roster.federation_id, job_id, call, *pair])
    hkdf = HKDF(algorithm=hashes.SHA256(), length=SEED_BYTES, salt=bytes.fromhex(roster.fingerprint),
                info=info)
    return hkdf.derive(kit.shared_secret(other))


def expand_mask(seed: bytes, length: int) -> np.ndarray:
    """``length`` values exactly uniform in [0, t) from a 32-byte seed (int64), by rejection sampling."""
    words = length + length // 32 + 64  # ~2% are rejected; a shortfall is astronomically rare
    while True:
        stream = np.frombuffer(hashlib.shake_256(_MASK_DOMAIN + seed).digest(4 * words), dtype="<u4")
        values = stream & _LOW_20_BITS
        accepted = values[values < PLAIN_MODULUS]
        if accepted.size >= length:  # the stream is prefix-stable, so retrying longer keeps the start
            return accepted[:length].astype(np.int64)
        words *= 2


def site_mask(kit: SiteKit, *, job_id: str, call: int, round_sites: Iterable[str], length: int) -> np.ndarray:
    """M_i = Σ_j ε_ij · m_ij (mod t) over the round's other sites, as int64 residues."""
    total = np.zeros(length, dtype=np.int64)
    for other in round_sites:
        if other != kit.site:  # ≤ 127 terms below 2^20 each: no int64 overflow
            mask = expand_mask(call_seed(kit, other, job_id=job_id, call=call), length)
            if sign_of(kit.roster, kit.site, other) > 0:
                total += mask
            else:
                total -= mask
    total %= PLAIN_MODULUS  # numpy's % of a positive modulus is never negative
    return total


def dropout_correction(roster: Roster, seeds: Iterable[tuple[str, str, bytes]], length: int) -> np.ndarray:
    """What to add to the survivors' sum: -Σ ε_ik · m_ik (mod t) for (survivor i, dropped k, k_ik)."""
    total = np.zeros(length, dtype=np.int64)
    for survivor, dropped, seed in seeds:
        mask = expand_mask(seed, length)
        if sign_of(roster, survivor, dropped) > 0:
            total -= mask
        else:
            total += mask
    total %= PLAIN_MODULUS
    return total
