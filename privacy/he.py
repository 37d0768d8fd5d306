"""Encrypted FedAvg: sites encrypt pre-weighted fixed-point vectors, the orchestrator only adds.

The orchestrator holds ``orchestrator-public.medsyftkey`` (parameters, no key at all), so it can add
ciphertexts but never read one; hospitals hold ``hospital-secret.medsyftkey`` and encrypt, decrypt
and release. Scheme and key files: :mod:`privacy.he_keys`.

Encoding and why the sum cannot wrap around
-------------------------------------------
BFV computes modulo the plain modulus t = 1032193; let half = (t - 1) // 2. Site i clamps its
values to [-B, B] (``bound``), multiplies by its FedAvg weight w_i in (0, 1] and rounds:
q_i = round(S · w_i · clamp(x_i)) with S = floor((half - margin) / B) and margin = 64. Then
|q_i| ≤ S·B·w_i + 1/2 and for the k parts of a sum with W = Σ w_i,

    |Σ q_i| ≤ S·B·W + k/2 ≤ (half - margin)·W + k/2.

:meth:`HEContext.aggregate` refuses W > 1 + 1e-9 and k > 128 = 2·margin, so |Σ q_i| ≤ half (it is an
integer and (half - margin)·1e-9 < 1/2): the residue in [0, t) maps back to the signed sum without
ambiguity (residues above half are negative). Noise: the scheme leaves 3-4 bits of noise budget
after 128 additions; decryption still refuses any chunk whose budget is exhausted.

Tolerance
---------
Σ q_i = S·Σ w_i·c_i + E with |E| ≤ k/2, so ``decrypt_mean`` = Σ q_i / (S·W) differs from the weighted
mean of the clamped values, np.average(clamp(x), weights=w), by at most k / (2·S·W); the float32
result adds at most B·2^-24. :func:`fedavg_tolerance` returns k/(2·S·W) + B·2^-23. For B = 4 (S =
129008), three sites and W = 1 that is 1.2e-5.

Release masks (the final model leaves only with every site's consent): :mod:`privacy.he_keys`.

Not protected: the metadata beside a ciphertext (weight_sum, n_parts) is plain and unauthenticated.
An orchestrator could label one site's ciphertext a mean of many; it still cannot read it, but a
masked release of it would publish that site's model. :mod:`privacy.secagg` is the fix, once the
runtime uses it: each site signs its part (weight and ciphertext digest included) and masks it, and
sites add the parts themselves (:meth:`HEContext.encrypt_residues` encrypts the masked residues).

>>> import tempfile
>>> keys = tempfile.TemporaryDirectory()
>>> secret, public, key_id = init_keys(keys.name + "/keys")
>>> hospital, orchestrator = load_context(secret), load_context(public)
>>> parts = [hospital.encrypt_weighted(np.array([0.5, -1.0]), weight=w, bound=4.0) for w in (0.25, 0.75)]
>>> hospital.decrypt_mean(orchestrator.aggregate(parts)).round(4).tolist()
[0.5, -1.0]
>>> keys.cleanup()
"""

from __future__ import annotations

import dataclasses
import fractions
import hashlib
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tenseal as ts  # type: ignore[import-untyped, unused-ignore]

from privacy.errors import HEError, KeyMismatch, NoSecretKey
from privacy.he_keys import (
    KEY_SCHEME,
    MARGIN,
    MAX_PARTS,
    PLAIN_MODULUS,
    POLY_MODULUS_DEGREE,
    ROLE_SECRET,
    SECRET_FILE,
    KeyFile,
    init_keys,
    is_int,
    read_key_bytes,
    read_key_file,
)
from privacy.he_release import release_mask, release_share, unmask_release

__all__ = [
    "KEY_SCHEME", "MAX_PARTS", "EncryptedVector", "HEContext", "fedavg_tolerance", "fixed_point_scale",
    "init_keys", "load_context", "load_context_bytes", "quantize", "release_mask", "release_share",
    "unmask_release",
]

HALF = (PLAIN_MODULUS - 1) // 2
WEIGHT_SUM_SLACK = 1e-9  # float sums of weights that should total 1 may exceed it by a few ulps
VECTOR_FORMAT = "medsyft-he-vector/2"  # chunks packed into one uint8 array + chunk_sizes
LEGACY_VECTOR_FORMAT = "medsyft-he-vector/1"  # chunks as a list of bytes (still read: stored results)
_FIELDS = ("key_id", "length", "scale", "bound", "weight_sum", "n_parts")


def fixed_point_scale(*, bound: float) -> int:
    """S = floor((half - margin) / bound), computed exactly so that S·bound ≤ half - margin.

    >>> fixed_point_scale(bound=4.0)
    129008
    """
    _check_real("bound", bound, low=0.0, high=math.inf)
    scale = math.floor(fractions.Fraction(HALF - MARGIN) / fractions.Fraction(bound))
    if scale < 1:
        raise HEError(f"bound must be ≤ {HALF - MARGIN} so that one fixed-point step fits (got {bound})")
    return scale


def fedavg_tolerance(*, n_parts: int, scale: int, weight_sum: float, bound: float) -> float:
    """Largest |decrypt_mean - np.average(clamped values, weights)| per coordinate (module docstring).

    >>> f"{fedavg_tolerance(n_parts=3, scale=fixed_point_scale(bound=4.0), weight_sum=1.0, bound=4.0):.1e}"
    '1.2e-05'
    """
    return 0.5 * n_parts / (scale * weight_sum) + bound * 2.0**-23


def quantize(vector: Any, *, weight: float, bound: float) -> np.ndarray:
    """The signed fixed-point integers q = round(S·weight·clamp(x)) that a part encrypts (int64).

    With bound 4 (S = 129008) and weight 0.5, 9.0 is first clamped to 4.0:

    >>> quantize(np.array([0.5, -1.0, 9.0]), weight=0.5, bound=4.0).tolist()
    [32252, -64504, 258016]
    """
    return _quantize(vector, weight=weight, bound=bound)[0]


def _centred(residues: Any, *, length: int | None = None) -> np.ndarray:
    """Residues in [0, t) as int64 in [-half, half], the range SEAL's batch encoder takes."""
    values = np.asarray(residues)
    if values.ndim != 1 or values.dtype.kind not in "iu" or not values.size or (
            length is not None and values.size != length):
        raise HEError(f"residues must be a non-empty 1-D integer array of the vector's length {length} "
                      f"(got {values.dtype} with shape {values.shape})")
    values = values.astype(np.int64, copy=False)
    if values.min() < 0 or values.max() >= PLAIN_MODULUS:
        raise HEError(f"residues must lie in [0, {PLAIN_MODULUS}) (reduce them mod t first)")
    return np.where(values > HALF, values - PLAIN_MODULUS, values)


def _quantize(vector: Any, *, weight: float, bound: float) -> tuple[np.ndarray, int]:
    scale = fixed_point_scale(bound=bound)
    _check_real("weight", weight, low=0.0, high=1.0)
    try:
        values = np.asarray(vector, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise HEError(f"vector must be numeric (got {type(vector).__name__}: {exc})") from exc
    if values.size == 0:
        raise HEError("vector must hold at least one value (got an empty array)")
    if bad := int(np.count_nonzero(~np.isfinite(values))):
        raise HEError(f"vector must be finite, but {bad} values are NaN or infinite (a diverged model?)")
    return np.rint(np.clip(values, -bound, bound) * (weight * scale)).astype(np.int64), scale


@dataclass(frozen=True)
class EncryptedVector:
    """One encrypted, pre-weighted vector or a sum of them; plain metadata travels beside the chunks.

    ``n_parts`` counts the site contributions summed in (1 when fresh); it bounds the rounding error
    and the noise, so :meth:`HEContext.aggregate` keeps it ≤ :data:`MAX_PARTS`.
    """

    key_id: str
    length: int
    scale: int
    bound: float
    weight_sum: float
    chunks: tuple[bytes, ...] = field(repr=False)
    n_parts: int = 1

    def __post_init__(self) -> None:
        _validate_vector(self)

    @property
    def nbytes(self) -> int:
        """Total serialized bytes of the ciphertext chunks."""
        return sum(len(chunk) for chunk in self.chunks)

    def chunk_length(self, index: int) -> int:
        """How many plaintext values chunk ``index`` holds."""
        return min(POLY_MODULUS_DEGREE, self.length - index * POLY_MODULUS_DEGREE)

    def to_dict(self) -> dict[str, Any]:
        """The wire form: metadata, the ciphertexts packed into one uint8 array, and their sizes.

        One numpy array rather than a list of ``bytes``: PySyft renders a ``repr`` and a ``str``
        of every value it wraps, each time it stores or loads it, and for ~0.4 MB of ``bytes``
        that costs ~10 ms, several times per call (a numpy array's is summarized).
        Measured on one idle datasite: a call carrying a 47k-parameter update each way went
        from 0.32 s to 0.20 s (docs/performance.md).
        """
        fields = {k: getattr(self, k) for k in _FIELDS}
        packed = np.frombuffer(b"".join(self.chunks), dtype=np.uint8)
        return {"format": VECTOR_FORMAT, **fields, "chunks": packed,
                "chunk_sizes": [len(c) for c in self.chunks]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EncryptedVector:
        """Rebuild from :meth:`to_dict` (or the older list-of-bytes form); :class:`HEError` if malformed."""
        formats = (VECTOR_FORMAT, LEGACY_VECTOR_FORMAT)
        if not isinstance(d, Mapping) or d.get("format") not in formats:
            raise HEError(f"not an encrypted vector: expected a dict with format {VECTOR_FORMAT!r}")
        allowed = {"format", "chunks", "chunk_sizes", *_FIELDS}
        if not {"format", "chunks", *_FIELDS} <= set(d) <= allowed:
            raise HEError(f"encrypted vector must have exactly the keys format, chunks, chunk_sizes, "
                          f"{', '.join(_FIELDS)} (got {sorted(map(str, d))})")
        values = {k: d[k] for k in _FIELDS}
        for k in ("bound", "weight_sum"):  # a JSON or PySyft hop may turn 1.0 into 1
            if is_int(values[k]):
                values[k] = float(values[k])
        return cls(**values, chunks=_unpack_chunks(d["chunks"], d.get("chunk_sizes")))

    def digest(self) -> str:
        """SHA-256 naming this exact ciphertext, whatever wire form it travelled in."""
        h = hashlib.sha256()
        meta = {"format": LEGACY_VECTOR_FORMAT, **{k: getattr(self, k) for k in _FIELDS}}
        h.update(json.dumps(meta, sort_keys=True).encode())
        for chunk in self.chunks:
            h.update(hashlib.sha256(chunk).digest())
        return h.hexdigest()


def _unpack_chunks(chunks: Any, sizes: Any) -> tuple[bytes, ...]:
    """Ciphertext bytes from a packed uint8 array plus sizes, or from a list of bytes."""
    if isinstance(chunks, list | tuple):
        out = tuple(chunks)
        if sizes is not None and (not isinstance(sizes, list | tuple)
                                  or list(sizes) != [len(c) if isinstance(c, bytes) else -1 for c in out]):
            raise HEError("encrypted vector chunk_sizes do not match its chunks")
        return out
    if not (isinstance(chunks, np.ndarray) and chunks.dtype == np.uint8 and chunks.ndim == 1):
        raise HEError(f"encrypted vector chunks must be a 1-D uint8 array or a list of bytes "
                      f"(got {type(chunks).__name__})")
    if not (isinstance(sizes, list | tuple) and sizes and all(is_int(n) and n > 0 for n in sizes)
            and sum(sizes) == chunks.size):
        raise HEError(f"encrypted vector chunk_sizes must be positive ints summing to the "
                      f"{chunks.size} packed bytes (got {sizes!r})")
    raw = chunks.tobytes()
    ends = np.cumsum(sizes).tolist()
    return tuple(raw[end - n:end] for n, end in zip(sizes, ends, strict=True))


def _check_real(name: str, value: object, *, low: float, high: float) -> None:
    """Require low < value ≤ high for a finite real number (bool is not a number here)."""
    real = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if real and low < float(value) <= high:  # type: ignore[arg-type]
        return
    raise HEError(f"{name} must be a finite number in ({low}, {high}] (got {value!r})")


def _validate_vector(v: EncryptedVector) -> None:
    if not (isinstance(v.key_id, str) and len(v.key_id) == 32 and set(v.key_id) <= set("0123456789abcdef")):
        raise HEError(f"key_id must be 32 lowercase hex characters (got {v.key_id!r})")
    for name in ("length", "scale", "n_parts"):
        if not (is_int(getattr(v, name)) and getattr(v, name) >= 1):
            raise HEError(f"{name} must be an int ≥ 1 (got {getattr(v, name)!r})")
    for name in ("bound", "weight_sum"):
        if not isinstance(getattr(v, name), float):
            raise HEError(f"{name} must be a float (got {getattr(v, name)!r})")
    _check_real("weight_sum", v.weight_sum, low=0.0, high=1.0 + WEIGHT_SUM_SLACK)
    if v.scale != fixed_point_scale(bound=v.bound):
        raise HEError(f"scale {v.scale} does not belong to bound {v.bound} "
                      f"(expected {fixed_point_scale(bound=v.bound)})")
    if v.n_parts > MAX_PARTS:
        raise HEError(f"n_parts must be ≤ {MAX_PARTS} (got {v.n_parts})")
    expected = -(-v.length // POLY_MODULUS_DEGREE)
    if len(v.chunks) != expected or not all(isinstance(c, bytes) and c for c in v.chunks):
        raise HEError(f"a vector of {v.length} values needs {expected} non-empty bytes chunks "
                      f"(got {len(v.chunks)} chunks)")


@dataclass(frozen=True)
class HEContext:
    """A loaded key file: TenSEAL context plus the ceremony's facts. Build with :func:`load_context`."""

    key_id: str
    params: dict[str, Any]
    has_secret: bool
    _tenseal: Any = field(repr=False, compare=False)
    release_seed: bytes | None = field(default=None, repr=False, compare=False)

    def encrypt_weighted(self, vector: np.ndarray, *, weight: float, bound: float) -> EncryptedVector:
        """Clamp to ±bound, pre-multiply by the FedAvg ``weight`` in (0, 1], quantize and encrypt."""
        self._require_secret("encrypt")
        q, scale = _quantize(vector, weight=weight, bound=bound)
        return self._encrypt_ints(q, scale=scale, weight=weight, bound=bound)

    def encrypt_residues(self, residues: np.ndarray, *, weight: float, bound: float) -> EncryptedVector:
        """Encrypt values already quantized (:func:`quantize`) and masked, given as residues in [0, t).

        The metadata is the unmasked part's (``weight``, ``bound``), so that once the masks cancel
        in a sum the no-wrap proof above applies unchanged (:mod:`privacy.secagg_masks`).
        """
        self._require_secret("encrypt")
        _check_real("weight", weight, low=0.0, high=1.0)
        scale = fixed_point_scale(bound=bound)
        return self._encrypt_ints(_centred(residues), scale=scale, weight=weight, bound=bound)

    def add_residues(self, enc: EncryptedVector, residues: np.ndarray) -> EncryptedVector:
        """Add a plaintext vector of residues mod t to ``enc`` (no key needed; metadata unchanged).

        Secure aggregation uses it to take a dropped site's masks out of a survivors' sum.
        """
        self._check_key(enc)
        plain = _centred(residues, length=enc.length)
        chunks = []
        for j, blob in enumerate(enc.chunks):
            vector = self._load_chunk(blob, enc.chunk_length(j))
            vector.add_(plain[j * POLY_MODULUS_DEGREE:(j + 1) * POLY_MODULUS_DEGREE].tolist())
            chunks.append(bytes(vector.serialize()))
        return dataclasses.replace(enc, chunks=tuple(chunks))

    def _encrypt_ints(self, q: np.ndarray, *, scale: int, weight: float, bound: float) -> EncryptedVector:
        chunks = tuple(ts.bfv_vector(self._tenseal, q[i:i + POLY_MODULUS_DEGREE].tolist()).serialize()
                       for i in range(0, q.size, POLY_MODULUS_DEGREE))
        return EncryptedVector(key_id=self.key_id, length=int(q.size), scale=scale, bound=float(bound),
                               weight_sum=float(weight), chunks=chunks)

    def aggregate(self, parts: Sequence[EncryptedVector]) -> EncryptedVector:
        """Add ciphertexts (works on the public context); refuses sums that could wrap around."""
        first = self._check_parts(parts)
        weight_sum = math.fsum(p.weight_sum for p in parts)
        n_parts = sum(p.n_parts for p in parts)
        if weight_sum > 1.0 + WEIGHT_SUM_SLACK or n_parts > MAX_PARTS:
            raise HEError(f"the summed weights must total ≤ 1 and at most {MAX_PARTS} parts (got "
                          f"{weight_sum!r} over {n_parts}): the fixed-point sum could wrap around")
        chunks = tuple(self._add_chunk([p.chunks[j] for p in parts], first.chunk_length(j))
                       for j in range(len(first.chunks)))
        return dataclasses.replace(first, weight_sum=weight_sum, n_parts=n_parts, chunks=chunks)

    def decrypt_mean(self, enc: EncryptedVector) -> np.ndarray:
        """The weighted mean Σ w_i·clamp(x_i) / Σ w_i as float32 (hospital key only)."""
        return (self._decrypt_signed(enc) / (enc.scale * enc.weight_sum)).astype(np.float32)

    def decrypt_sum_residues(self, enc: EncryptedVector) -> np.ndarray:
        """The plaintext sum's residues in [0, t) as int64, the input of a masked release."""
        signed = self._decrypt_signed(enc)
        return np.where(signed < 0, signed + PLAIN_MODULUS, signed)

    def _decrypt_signed(self, enc: EncryptedVector) -> np.ndarray:
        """The plaintext sum as int64 in [-half, half]: SEAL's batch decoder centres the residues."""
        self._require_secret("decrypt")
        self._check_key(enc)
        decryptor = self._tenseal.decryptor().data
        return np.concatenate([self._decrypt_chunk(blob, enc.chunk_length(j), decryptor)
                               for j, blob in enumerate(enc.chunks)])

    def _require_secret(self, action: str) -> None:
        if not self.has_secret:
            raise NoSecretKey(f"cannot {action} with key {self.key_id[:8]}: this context holds no secret "
                              f"key (it is the orchestrator's public file); {action} at a hospital with "
                              f"{SECRET_FILE}")

    def _check_key(self, enc: object) -> EncryptedVector:
        if not isinstance(enc, EncryptedVector):
            raise HEError(f"expected an EncryptedVector (got {type(enc).__name__}); "
                          "rebuild a received dict with EncryptedVector.from_dict")
        if enc.key_id != self.key_id:
            raise KeyMismatch(f"ciphertext was made under key {enc.key_id[:8]} but this context holds key "
                              f"{self.key_id[:8]}; use key files from the same ceremony as the sites")
        return enc

    def _check_parts(self, parts: Sequence[EncryptedVector]) -> EncryptedVector:
        if not parts:
            raise HEError("aggregate needs at least one encrypted vector (got none)")
        first = self._check_key(parts[0])
        for part in parts[1:]:
            self._check_key(part)
            if (part.length, part.scale, part.bound) != (first.length, first.scale, first.bound):
                raise HEError(f"all parts must share length, scale and bound (got {part.length}, "
                              f"{part.scale}, {part.bound} vs {first.length}, {first.scale}, {first.bound})")
        return first

    def _load_chunk(self, blob: bytes, expected: int) -> Any:
        try:
            vector = ts.bfv_vector_from(self._tenseal, blob)
            size = vector.size()
        except Exception as exc:  # TenSEAL raises ValueError or RuntimeError on a bad stream
            raise HEError(f"a ciphertext chunk is not a BFV ciphertext of this scheme ({exc})") from exc
        if size != expected:
            raise HEError(f"a ciphertext chunk holds {size} values where {expected} were expected")
        return vector

    def _add_chunk(self, blobs: list[bytes], expected: int) -> bytes:
        total = self._load_chunk(blobs[0], expected)
        for blob in blobs[1:]:
            total.add_(self._load_chunk(blob, expected))
        return bytes(total.serialize())

    def _decrypt_chunk(self, blob: bytes, expected: int, decryptor: Any) -> np.ndarray:
        vector = self._load_chunk(blob, expected)
        if decryptor.invariant_noise_budget(vector.ciphertext()[0]) <= 0:
            raise HEError("a ciphertext's noise budget is exhausted, so its decryption is unreliable "
                          f"(more than {MAX_PARTS} parts summed, or a tampered ciphertext); encrypt again")
        return np.asarray(vector.decrypt(), dtype=np.int64)


def load_context(path: str | os.PathLike[str]) -> HEContext:
    """Load ``hospital-secret.medsyftkey`` or ``orchestrator-public.medsyftkey``."""
    return _context_of(read_key_file(path))


def load_context_bytes(data: bytes) -> HEContext:
    """Load a key file's bytes (as shipped to a datasite)."""
    return _context_of(read_key_bytes(data))


def _context_of(key: KeyFile) -> HEContext:
    return HEContext(key_id=key.key_id, params=key.params, has_secret=key.role == ROLE_SECRET,
                     _tenseal=key.context, release_seed=key.release_seed)
