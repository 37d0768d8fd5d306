"""What encrypted FedAvg costs on the wire and in time, and why BFV rather than CKKS.

Usage::

    .venv/bin/python benchmarks/he_wire_cost.py [--sizes 47170,1000000,11200000] [--sites 3]

Table 1: the chosen scheme (:mod:`privacy.he`, BFV N=4096 [32, 32], fixed point) for the small
CNN (47,170 parameters), 1 M and ResNet-18 (11.2 M): wire bytes per parameter (the pickled
``EncryptedVector.to_dict()``, everything included) and as a multiple of float32; encryption rate
per site, aggregation rate (model parameters per second over all sites' ciphertexts, the public
context only adding) and decryption rate, in millions of parameters per second; the largest
error against plain FedAvg (np.average of the clamped float32 vectors).

Table 2, at 100 k parameters: the same protocol (sites pre-weight, the aggregator only adds)
under the rejected alternatives, CKKS N=8192 [60,40,40,60] scale 2^40 (TenSEAL's tutorial
default) and CKKS N=4096 [30,25,30] scale 2^25, and BFV [30, 30] with public-key encryption
(the first choice), beside the chosen scheme. Table 3: SEAL's invariant noise budget left after
summing k fresh BFV ciphertexts; at 0 bits a decryption may be wrong.
"""

from __future__ import annotations

import argparse
import math
import pickle
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import tenseal as ts  # type: ignore[import-untyped, unused-ignore]

from privacy.he import init_keys, load_context
from privacy.he_keys import PLAIN_MODULUS

BOUND = 4.0


def _vectors(size: int, sites: int) -> tuple[list[np.ndarray], list[float]]:
    rng = np.random.default_rng(size)
    raw = rng.uniform(1.0, 3.0, sites)
    return [rng.normal(0, 0.05, size).astype(np.float32) for _ in range(sites)], list(raw / raw.sum())


def _plain(vectors: list[np.ndarray], weights: list[float]) -> np.ndarray:
    return np.average(np.clip(np.stack(vectors).astype(np.float64), -BOUND, BOUND), axis=0, weights=weights)


def _timed(fn: Callable[[], Any], *, size: int) -> tuple[Any, float]:
    """Best of a few runs for small vectors (one for big ones): the machine may be busy."""
    best = math.inf
    for _ in range(max(1, min(5, 2_000_000 // size))):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def chosen_scheme(size: int, sites: int, hospital: Any, orchestrator: Any) -> dict[str, Any]:
    vectors, weights = _vectors(size, sites)
    parts, t_enc = _timed(lambda: [hospital.encrypt_weighted(v, weight=w, bound=BOUND)
                                   for v, w in zip(vectors, weights, strict=True)], size=size)
    total, t_agg = _timed(lambda: orchestrator.aggregate(parts), size=size)
    mean, t_dec = _timed(lambda: hospital.decrypt_mean(total), size=size)
    per_param = len(pickle.dumps(parts[0].to_dict())) / size
    return {"scheme": "BFV 4096 [32,32] sym, fixed point", "params": size, "bytes/param": per_param,
            "x float32": per_param / 4, "encrypt M/s/site": size * sites / t_enc / 1e6,
            "aggregate M/s": size / t_agg / 1e6, "decrypt M/s": size / t_dec / 1e6,
            "max abs error": float(np.max(np.abs(mean - _plain(vectors, weights))))}


class _Raw:
    """The same protocol on raw TenSEAL, for schemes medsyft does not ship."""

    def __init__(self, name: str, *, ckks: bool, n: int, bits: list[int], scale_bits: int = 0,
                 symmetric: bool = False) -> None:
        kind = ts.ENCRYPTION_TYPE.SYMMETRIC if symmetric else ts.ENCRYPTION_TYPE.ASYMMETRIC
        scheme = ts.SCHEME_TYPE.CKKS if ckks else ts.SCHEME_TYPE.BFV
        self.name, self.ckks = name, ckks
        self.slots = n // 2 if ckks else n
        self.ctx = ts.context(scheme, poly_modulus_degree=n, plain_modulus=None if ckks else PLAIN_MODULUS,
                              coeff_mod_bit_sizes=bits, encryption_type=kind)
        if ckks:
            self.ctx.global_scale = 2.0**scale_bits
        self.public = ts.context_from(self.ctx.serialize(save_public_key=False, save_secret_key=False,
                                                         save_galois_keys=False, save_relin_keys=False))
        self.scale = (PLAIN_MODULUS // 2 - 64) // BOUND

    def encrypt(self, vector: np.ndarray, weight: float) -> list[bytes]:
        values = np.clip(vector.astype(np.float64), -BOUND, BOUND) * weight
        if not self.ckks:
            values = np.rint(values * self.scale).astype(np.int64)
        make = ts.ckks_vector if self.ckks else ts.bfv_vector
        return [make(self.ctx, values[i:i + self.slots].tolist()).serialize()
                for i in range(0, values.size, self.slots)]

    def aggregate(self, parts: list[list[bytes]]) -> list[bytes]:
        load = ts.ckks_vector_from if self.ckks else ts.bfv_vector_from
        out = []
        for blobs in zip(*parts, strict=True):
            total = load(self.public, blobs[0])
            for blob in blobs[1:]:
                total.add_(load(self.public, blob))
            out.append(total.serialize())
        return out

    def decrypt(self, chunks: list[bytes]) -> np.ndarray:
        load = ts.ckks_vector_from if self.ckks else ts.bfv_vector_from
        values = np.concatenate([np.asarray(load(self.ctx, c).decrypt()) for c in chunks])
        if self.ckks:
            return values.astype(np.float32)
        values = np.where(values % PLAIN_MODULUS > PLAIN_MODULUS // 2, values % PLAIN_MODULUS - PLAIN_MODULUS,
                          values % PLAIN_MODULUS)
        return (values / self.scale).astype(np.float32)

    def row(self, size: int, sites: int) -> dict[str, Any]:
        vectors, weights = _vectors(size, sites)
        parts, t_enc = _timed(lambda: [self.encrypt(v, w) for v, w in zip(vectors, weights, strict=True)],
                               size=size)
        total, t_agg = _timed(lambda: self.aggregate(parts), size=size)
        mean, t_dec = _timed(lambda: self.decrypt(total), size=size)
        per_param = len(pickle.dumps(parts[0])) / size
        return {"scheme": self.name, "params": size, "bytes/param": per_param, "x float32": per_param / 4,
                "encrypt M/s/site": size * sites / t_enc / 1e6, "aggregate M/s": size / t_agg / 1e6,
                "decrypt M/s": size / t_dec / 1e6,
                "max abs error": float(np.max(np.abs(mean - _plain(vectors, weights))))}


def _alternatives() -> list[_Raw]:
    return [
        _Raw("CKKS 8192 [60,40,40,60] 2^40 (tutorial)", ckks=True, n=8192, bits=[60, 40, 40, 60],
             scale_bits=40),
        _Raw("CKKS 4096 [30,25,30] 2^25", ckks=True, n=4096, bits=[30, 25, 30], scale_bits=25),
        _Raw("BFV 4096 [30,30] public-key (first choice)", ckks=False, n=4096, bits=[30, 30]),
    ]


def noise_budget(counts: tuple[int, ...] = (1, 3, 16, 128)) -> pd.DataFrame:
    """Bits of invariant noise budget left after summing k fresh ciphertexts of random plaintexts."""
    rng = np.random.default_rng(1)
    rows = []
    for label, bits, symmetric in (("BFV 4096 [30,30] public-key", [30, 30], False),
                                   ("BFV 4096 [32,32] symmetric (chosen)", [32, 32], True)):
        raw = _Raw(label, ckks=False, n=4096, bits=bits, symmetric=symmetric)
        decryptor = raw.ctx.decryptor().data
        total, row = None, {"scheme": label}
        for k in range(1, max(counts) + 1):
            fresh = ts.bfv_vector(raw.ctx, rng.integers(0, PLAIN_MODULUS, 4096).tolist())
            total = fresh if total is None else total + fresh
            if k in counts:
                row[f"k={k}"] = decryptor.invariant_noise_budget(total.ciphertext()[0])
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="47170,1000000,11200000",
                        help="comma-separated parameter counts for table 1")
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--alt-size", type=int, default=100_000, help="parameter count for table 2")
    args = parser.parse_args()
    secret, public, _ = init_keys(tempfile.mkdtemp(prefix="medsyft-he-") + "/keys")
    hospital, orchestrator = load_context(secret), load_context(public)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    fmt = {"bytes/param": 2, "x float32": 2, "encrypt M/s/site": 2, "aggregate M/s": 1, "decrypt M/s": 2}
    chosen = pd.DataFrame([chosen_scheme(n, args.sites, hospital, orchestrator) for n in sizes])
    print(f"\nEncrypted FedAvg, {args.sites} sites, chosen scheme\n"
          + chosen.round(fmt).to_string(index=False))
    rows = [chosen_scheme(args.alt_size, args.sites, hospital, orchestrator)]
    rows += [alt.row(args.alt_size, args.sites) for alt in _alternatives()]
    print(f"\nAlternatives at {args.alt_size:,} parameters, {args.sites} sites\n"
          + pd.DataFrame(rows).round(fmt).to_string(index=False))
    print("\nNoise budget (bits) left after summing k ciphertexts\n" + noise_budget().to_string(index=False))


if __name__ == "__main__":
    main()
