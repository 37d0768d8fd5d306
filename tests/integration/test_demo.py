"""``medsyft demo``, the README's main job, end to end in a subprocess (shortened: 2 rounds)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from support import run_cli_subprocess

from medsyft.demo import DEMO_ENTRIES, DEMO_MARKER

pytestmark = pytest.mark.slow


def test_demo_prints_epsilon_and_wire_cost_and_releases_the_model(tmp_path: Path) -> None:
    result = run_cli_subprocess("demo", "--rounds", "2", "--count", "1200",
                                "--workdir", str(tmp_path / "demo"), timeout=600)
    assert result.code == 0, result.err[-3000:]
    out = result.out
    assert "key ceremony: HE key" in out and "ε budget" in out
    assert "this job alone: ε=" in out and "RELEASE of job" in out  # both reviews were printed
    wire = re.search(r"HE wire cost per round: [\d.]+ MB per site .* \(([\d.]+)x float32\)", out)
    assert wire is not None and float(wire.group(1)) <= 4.0
    assert "ε per hospital after the job" in out and "dataset_epsilon_remaining" in out
    assert "released and unmasked" in out and (tmp_path / "demo/run/release/model.npz").exists()
    assert "federated vs centralized" in out and (tmp_path / "demo/run/curves.png").exists()
    assert "datasites stopped" in out
    made = {p.name for p in (tmp_path / "demo").iterdir()}
    assert DEMO_MARKER in made and made <= DEMO_ENTRIES  # so a rerun may replace all of it
