"""Smoke run of ``benchmarks/peers/run.py``: medsyft, Flower and NVIDIA FLARE on one 2-round job.

Real parts throughout: medsyft's three datasite processes, Flower's Ray simulation and NVIDIA
FLARE's simulator, each peer in its own venv that the benchmark installs from the package
registry (once, under ``~/.cache/medsyft-peers``). The test skips when the PneumoniaMNIST copy
beside the checkout is missing or a peer cannot be installed (no registry); it never asserts a
duration. What it does assert is that the three systems ran *the same job*: the same model (the
same update size) from the same initial weights over the same shards, so after two rounds their
final models score the same on the test split, to float rounding.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest
from support import PNEUMONIA_NPZ, REPO

pytestmark = pytest.mark.slow


def test_medsyft_flower_and_nvflare_train_the_same_job(tmp_path):
    if not PNEUMONIA_NPZ.is_file():
        pytest.skip(f"needs the PneumoniaMNIST copy at {PNEUMONIA_NPZ}")
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "peers" / "run.py"), "--rounds", "2", "--no-he",
         "--systems", "medsyft,flower,nvflare-sim", "--source", str(PNEUMONIA_NPZ), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=3600, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    skipped = json.loads((tmp_path / "skipped.json").read_text())
    if any("could not be installed" in line for line in skipped):
        pytest.skip(f"a peer could not be installed: {skipped}")
    assert skipped == [], skipped  # a peer that installed but failed is a failure
    table = pd.read_csv(tmp_path / "peers.csv")
    assert sorted(table["system"]) == ["Flower", "NVIDIA FLARE", "medsyft"]
    assert table["up_MB"].max() / table["up_MB"].min() < 1.05, table  # one model, float32 everywhere
    # the same job: two rounds of the same FedAvg from the same start land on the same model
    assert table["test_auc"].max() - table["test_auc"].min() < 0.02, table[["system", "test_auc"]]
    assert table["test_acc"].between(0, 1).all()
    assert (table["whole_job_s"] > table["rounds_s"]).all() and (table["rounds_s"] > 0).all(), table
    report = (tmp_path / "peers.md").read_text()
    assert "medsyft / Flower steady_round_s" in report and "medsyft / Flower whole_job_s" in report
