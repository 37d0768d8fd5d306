"""How far a cross-site test score's DP noise moves it, by noise σ and released bins: pick [evaluation].

Usage::

    .venv/bin/python benchmarks/eval_noise.py [--sites 3] [--per-site 208] [--repeats 300]

The test split here is PneumoniaMNIST's 624 images (62.5% pneumonia) shared by three hospitals.
Each site's exact counts come from a binormal score model whose exact ROC-AUC is about 0.93 (a
model like the ones this project trains); every repeat releases them with the datasite's own
noise (:func:`domains.runtime.noisy_metrics.add_metric_noise`), pools them as ``medsyft evaluate``
does, and compares with the exact pooled figures. Prints, per σ and bin count: ε of the one
release at δ = 1e-5 (the RDP accountant medsyft charges), the accuracy error (mean ± sd), the
ROC-AUC error (bias ± sd), and the AUC's binning bias without noise. The table goes to
docs/training.md.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from domains.runtime.noisy_metrics import add_metric_noise, coarsen
from domains.shared.counts import BINS, EvalResult, histogram_auc, pool
from privacy.accounting import epsilon


def site(rng: np.random.Generator, n: int, prevalence: float = 0.625) -> tuple[EvalResult, int]:
    """One hospital's exact counts under a binormal score model (exact AUC about 0.93)."""
    truth = (rng.random(n) < prevalence).astype(int)
    scores = 1.0 / (1.0 + np.exp(-rng.normal(2.1 * truth - 1.05, 0.75)))
    bins = np.minimum((scores * BINS).astype(int), BINS - 1)
    hist = np.zeros((2, 2, BINS), np.int64)
    np.add.at(hist[1], (truth, bins), 1)
    np.add.at(hist[0], (1 - truth, BINS - 1 - bins), 1)
    correct = int(((scores > 0.5) == truth).sum())
    exact = EvalResult(n=n, loss=0.0, accuracy=correct / n, auc=histogram_auc(hist), score_histograms=hist)
    return exact, correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--per-site", type=int, default=208)
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for sigma in (1.0, 2.0, 3.0, 5.0):
        for bins in (4, 10, 20):
            acc_err, auc_err, bin_bias = [], [], []
            for _ in range(args.repeats):
                sites = [site(rng, args.per_site) for _ in range(args.sites)]
                exact = pool([r for r, _ in sites])
                noisy = pool([add_metric_noise(r, eval_noise_multiplier=sigma, correct=c, rng=rng, bins=bins)
                              for r, c in sites])
                acc_err.append(noisy.accuracy - exact.accuracy)
                auc_err.append(noisy.auc - exact.auc)
                bin_bias.append(histogram_auc(coarsen(exact.score_histograms.astype(float), bins=bins))
                                - exact.auc)
            rows.append({"σ": sigma, "ε (δ=1e-5)": epsilon([(sigma, 1.0, 1)], delta=1e-5), "bins": bins,
                         "accuracy error": f"{np.mean(acc_err):+.3f} ± {np.std(acc_err):.3f}",
                         "AUC error": f"{np.nanmean(auc_err):+.3f} ± {np.nanstd(auc_err):.3f}",
                         "AUC binning bias": f"{np.mean(bin_bias):+.3f}"})
    with pd.option_context("display.width", 200, "display.float_format", "{:.2f}".format):
        print(f"{args.sites} sites x {args.per_site} test images, {args.repeats} releases each")
        print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
