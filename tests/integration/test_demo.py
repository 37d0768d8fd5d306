"""``medsyft demo``, the README's main job, end to end in a subprocess (shortened: 2 rounds)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support import run_cli_subprocess

from medsyft.demo import DEMO_ENTRIES, DEMO_MARKER

pytestmark = pytest.mark.slow


def test_demo_prints_epsilon_and_wire_cost_and_releases_the_model(tmp_path: Path) -> None:
    result = run_cli_subprocess("demo", "--rounds", "2", "--count", "1200", "--batch-size", "48",
                                "--val-fraction", "0.25", "--workdir", str(tmp_path / "demo"), "--dashboard",
                                "0", timeout=600,
                                env={"MEDSYFT_WARM_RUNTIME": "1"})  # the default, which conftest turns off
    assert result.code == 0, result.err[-3000:]
    out = result.out
    assert "a CA, a TLS kit per hospital" in out and "ε budget" in out
    assert "HTTPS with mutual TLS" in out
    job_urls = re.findall(r'url = "([^"]+)"', (tmp_path / "demo/job.toml").read_text())
    assert len(job_urls) == 3 and all(u.startswith("https://127.0.0.1:") for u in job_urls)
    assert "this job alone: ε=" in out and "RELEASE of job" in out  # both reviews were printed
    wire = re.search(r"HE wire cost per round: [\d.]+ MB per site .* \(([\d.]+)x float32\)", out)
    assert wire is not None and float(wire.group(1)) <= 4.0
    assert "ε per hospital after the job" in out and "dataset_epsilon_remaining" in out
    assert "released and unmasked" in out and (tmp_path / "demo/run/release/model.npz").exists()
    assert f"final model: {tmp_path / 'demo/run/release/model.npz'} (released by every owner" in out
    # the headline is the test split: 1200 // 4 fresh phantoms no site trained or tuned on
    assert re.search(r"headline: test split \(fresh synthetic phantoms, seed 1000003, 300 images never "
                     r"trained, tuned or validated on\): accuracy 0\.\d{3}, ROC-AUC 0\.\d{3}", out)
    assert "federated (fedavg) vs centralized" in out and "test_accuracy" in out and "val_accuracy" in out
    assert (tmp_path / "demo/run/curves.png").exists()
    central = (tmp_path / "demo/run/baseline.csv").read_text()  # the comparison's centralized side, kept
    assert central.startswith("accuracy,auc,loss,wall_s,n_train,n_val,test_accuracy,test_auc,n_test\n")
    card = json.loads((tmp_path / "demo/run/release/model_card.json").read_text())
    assert card["privacy"]["he"] and "centralized_baseline" in card["results"]  # written again after it
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/", out)
    job_toml = (tmp_path / "demo/job.toml").read_text()
    assert "batch_size = 48\n" in job_toml and "val_fraction = 0.25\n" in job_toml
    assert "datasites stopped" in out
    for hospital in ("hospital-a", "hospital-b", "hospital-c"):  # warmed while it waited for work
        log = (tmp_path / "demo" / hospital / "datasite.log").read_text()
        assert "medsyft: runtime warmed in" in log and "required (mutual TLS)" in log
    made = {p.name for p in (tmp_path / "demo").iterdir()}
    assert DEMO_MARKER in made and made <= DEMO_ENTRIES  # so a rerun may replace all of it


def test_demo_without_protections_or_baseline_says_where_its_plaintext_model_is(tmp_path: Path) -> None:
    result = run_cli_subprocess("demo", "--rounds", "1", "--count", "600", "--no-dp", "--no-he",
                                "--no-baseline", "--workdir", str(tmp_path / "demo"), timeout=600)
    assert result.code == 0, result.err[-3000:]
    assert f"final model: {tmp_path / 'demo/run/release/model.npz'} (plaintext" in result.out
    assert (tmp_path / "demo/run/global-1.npz").exists()
    assert (tmp_path / "demo/run/release/model_card.md").exists()
    assert "headline: test split" in result.out and "vs centralized" not in result.out
