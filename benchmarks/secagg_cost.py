"""What verifiable, masked secure aggregation costs per round, beside today's single encrypted sum.

Usage::

    .venv/bin/python benchmarks/secagg_cost.py [--sizes 47170,1000000,11200000] [--sites 3,10]

For each model size (the small CNN, 1 M, ResNet-18's 11.2 M parameters) and federation size N, one
round of :mod:`privacy.secagg` with real keys: every site masks (N - 1 pairwise masks), quantizes and
encrypts, and signs its part; one site then verifies all N parts (signatures and ciphertext digests),
adds them and decrypts the sum; and a dropout round (one site missing) adds the survivors' mask
recovery. Times are per site, in seconds (TenSEAL uses every core): ``mask``, ``encrypt`` (today's cost too),
``sign`` (digest + Ed25519), ``verify`` (all N parts), ``add N`` (the addition each site now does,
which today only the orchestrator does, once), ``decrypt`` (as today) and ``dropout`` (the extra
work of the aggregating site when one site dropped: seeds, masks, plaintext addition). Bytes: one
signed part on the wire (pickled ``SignedPart.to_dict()``), what each site downloads per round
today (one sum) and now (N parts), and what the orchestrator sends per round now (N² parts).
"""

from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from privacy.ceremony import init_federation
from privacy.he import HEContext, load_context, quantize
from privacy.he_keys import PLAIN_MODULUS
from privacy.roster import Roster, SiteKit, load_site_kit
from privacy.secagg import aggregate_round, decrypt_round, make_part, recover_masks
from privacy.secagg_masks import dropout_correction, site_mask
from privacy.secagg_messages import SignedPart
from privacy.secagg_verify import check_parts

BOUND = 4.0
JOB = "bench"


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _federation(n_sites: int) -> tuple[Roster, list[SiteKit], HEContext]:
    fed = init_federation(tempfile.mkdtemp(prefix="medsyft-secagg-") + "/keys",
                          [f"site-{i:02d}" for i in range(n_sites)])
    kits = [load_site_kit(folder) for folder in fed.kits.values()]
    return fed.roster, kits, load_context(fed.secret_path)


def round_cost(size: int, n_sites: int) -> dict[str, Any]:
    roster, kits, ctx = _federation(n_sites)
    names = sorted(k.site for k in kits)
    rng = np.random.default_rng(size)
    row: dict[str, Any] = {"params": size, "sites": n_sites}
    kit = kits[0]
    _, row["mask s"] = _timed(lambda: site_mask(kit, job_id=JOB, call=1, round_sites=names, length=size))
    plain = rng.normal(0, 0.05, size)
    _, row["encrypt s"] = _timed(lambda: ctx.encrypt_weighted(plain, weight=1 / n_sites, bound=BOUND))
    updates = [rng.normal(0, 0.05, size) for _ in kits]
    parts, made = _timed(lambda: [make_part(k, ctx, v, weight=1 / n_sites, bound=BOUND, job_id=JOB, call=1,
                                            round_sites=names) for k, v in zip(kits, updates, strict=True)])
    _, row["sign s"] = _timed(lambda: (parts[0].vector.digest(), kit.sign(parts[0].statement())))
    _, row["verify s"] = _timed(lambda: check_parts(roster, parts, job_id=JOB, call=1, basis="",
                                                    key_id=ctx.key_id))
    total, row["add N s"] = _timed(lambda: ctx.aggregate([p.vector for p in parts]))
    _, row["decrypt s"] = _timed(lambda: ctx.decrypt_mean(total))
    verified = aggregate_round(ctx, roster, parts, job_id=JOB, call=1)
    plain_sum = sum(quantize(v, weight=1 / n_sites, bound=BOUND) for v in updates)
    row["exact"] = bool(np.array_equal(ctx.decrypt_sum_residues(verified.vector),
                                       np.asarray(plain_sum) % PLAIN_MODULUS))
    row["dropout s"] = _dropout(roster, kits, ctx, parts)
    row.update(_bytes(parts[0], n_sites))
    row["make_part s"] = made / n_sites  # mask + quantize + encrypt + digest + sign
    return row


def _dropout(roster: Roster, kits: list[SiteKit], ctx: HEContext, parts: list[SignedPart]) -> float:
    """Extra work at the aggregating site when the last site dropped (one recovery per survivor)."""
    survivors = [p.site for p in parts[:-1]]
    recoveries = [recover_masks(k, p, survivors=survivors)
                  for k, p in zip(kits[:-1], parts[:-1], strict=True)]
    dropped = parts[-1].site
    partial = ctx.aggregate([p.vector for p in parts[:-1]])
    start = time.perf_counter()
    seeds = [(r.site, dropped, r.seeds[dropped]) for r in recoveries]
    ctx.add_residues(partial, dropout_correction(roster, seeds, partial.length))
    took = time.perf_counter() - start
    verified = aggregate_round(ctx, roster, parts[:-1], job_id=JOB, call=1, recoveries=recoveries)
    decrypt_round(ctx, verified)  # refuses a sum outside ±bound: the survivors' masks are gone
    return took


def _bytes(part: SignedPart, n_sites: int) -> dict[str, float]:
    mb = len(pickle.dumps(part.to_dict())) / 1e6
    return {"part MB": mb, "down/site today MB": mb, "down/site now MB": n_sites * mb,
            "orchestrator out today MB": n_sites * mb, "orchestrator out now MB": n_sites * n_sites * mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="47170,1000000,11200000", help="comma-separated parameter counts")
    parser.add_argument("--sites", default="3,10", help="comma-separated federation sizes")
    args = parser.parse_args()
    sites = [int(n) for n in args.sites.split(",")]
    rows = [round_cost(size, n) for size in map(int, args.sizes.split(",")) for n in sites]
    table = pd.DataFrame(rows)
    print("\nVerifiable secure aggregation, one round (seconds per site)\n"
          + table.round(3).to_string(index=False))


if __name__ == "__main__":
    main()
