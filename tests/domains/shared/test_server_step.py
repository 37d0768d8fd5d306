"""Server optimizers: the step's maths, its job constant, and a site's own copy of the global state."""

from __future__ import annotations

import dataclasses
import io
import json
import stat
from pathlib import Path

import numpy as np
import pytest

from domains.runtime.errors import CallLogCorrupt, MissedAggregate, TrainingError
from domains.runtime.site_global import STATE_FILE, SiteGlobal, step_global
from domains.shared.server_step import ServerState, ServerStep, server_update
from domains.shared.spec import HESpec, JobSpec
from domains.site.datadir import DataDir, DatasiteConfig

X0 = np.array([0.0, 1.0, -0.5], np.float32)
A1 = np.array([1.0, 1.0, -1.5], np.float32)  # d = [1, 0, -1]


def _vector(*values: float) -> np.ndarray:
    return np.array(values, np.float32)


# -- the maths ----------------------------------------------------------------------------------
def test_first_steps_match_the_papers_closed_forms() -> None:
    """From zero moments: FedAvgM moves by η·d; FedAdam and FedYogi by η·(1−β1)·d / (√(1−β2)·|d| + τ)."""
    momentum = ServerStep.of("fedavgm", lr=0.5, momentum=0.9)
    assert server_update(momentum, X0, A1, ServerState())[0].tolist() == [0.5, 1.0, -1.0]
    for kind in ("fedadam", "fedyogi"):
        step = ServerStep.of(kind, lr=0.1, tau=1e-3)  # β1 = 0.9, β2 = 0.99: Flower's defaults
        x, state = server_update(step, X0, A1, ServerState())
        moved = 0.1 * 0.1 / (0.1 + 1e-3)  # |d| = 1
        assert np.allclose(x, X0 + np.array([moved, 0.0, -moved]), rtol=0, atol=1e-7)
        assert np.allclose(state.second_moment, [0.01, 0.0, 0.01], rtol=1e-12)


def test_yogi_and_adam_differ_from_the_second_step() -> None:
    """Adam's v decays towards d² by β2; Yogi's moves by (1−β2)·d² in the direction of d² only."""
    adam, yogi = ServerStep.of("fedadam"), ServerStep.of("fedyogi")
    small = _vector(0.05, 0.05, 0.05)  # a second pseudo-gradient smaller than the first: d² < v
    states = {}
    for step in (adam, yogi):
        x, state = server_update(step, X0, A1, ServerState())
        states[step.kind] = server_update(step, x, x + small, state)[1]
    v, d2 = 0.01, 0.05**2  # v after the first step, |d| = 1
    assert np.isclose(states["fedadam"].second_moment[0], 0.99 * v + 0.01 * d2, rtol=1e-6, atol=0)
    assert np.isclose(states["fedyogi"].second_moment[0], v - 0.01 * d2, rtol=1e-6, atol=0)


def test_fedavgm_momentum_carries_on_and_beta_zero_is_fedavg() -> None:
    heavy = ServerStep.of("fedavgm", momentum=0.9)
    x, state = server_update(heavy, X0, A1, ServerState())
    x2, _ = server_update(heavy, x, x, state)  # a round that changes nothing still moves by β·v
    assert np.allclose(x2 - x, 0.9 * (A1 - X0))
    fedavg = ServerStep.of("fedavgm")  # Flower's defaults: η = 1, β = 0
    assert np.array_equal(server_update(fedavg, X0, A1, ServerState())[0], A1)


def test_identical_inputs_give_bit_identical_outputs() -> None:
    rng = np.random.default_rng(0)
    x, a = rng.normal(size=1000).astype(np.float32), rng.normal(size=1000).astype(np.float32)
    for kind in ("fedavgm", "fedadam", "fedyogi"):
        step = ServerStep.of(kind)
        one = server_update(step, x, a, ServerState())
        strided = np.empty(2000, np.float32)
        strided[::2] = x  # another memory layout of the same values
        other = server_update(step, strided[::2], a.copy(), ServerState())
        assert one[0].tobytes() == other[0].tobytes()
        assert all(one[1].to_arrays()[k].tobytes() == other[1].to_arrays()[k].tobytes()
                   for k in one[1].to_arrays())


def test_state_round_trips_through_npz_and_bad_states_are_refused() -> None:
    _, state = server_update(ServerStep.of("fedyogi"), X0, A1, ServerState())
    buffer = io.BytesIO()
    np.savez(buffer, **state.to_arrays())
    buffer.seek(0)
    with np.load(buffer) as npz:
        again = ServerState.from_arrays({k: npz[k] for k in npz.files})
    assert np.array_equal(again.momentum, state.momentum) and np.array_equal(again.second_moment,
                                                                             state.second_moment)
    assert ServerState().to_arrays() == {}
    with pytest.raises(TrainingError, match="momentum and second_moment only"):
        ServerState.from_arrays({"velocity": np.zeros(3)})
    with pytest.raises(TrainingError, match="float64"):
        ServerState.from_arrays({"momentum": np.zeros(3, np.float32)})
    with pytest.raises(TrainingError, match="belongs to another model"):
        server_update(ServerStep.of("fedadam"), X0[:2], A1[:2], state)
    with pytest.raises(TrainingError, match="float32 vector of 3 values"):
        server_update(ServerStep.of("fedadam"), X0, A1[:2], ServerState())


# -- the job constant ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "given", "message"),
    [
        ("fedsgd", {}, "unknown server optimizer 'fedsgd'"),
        ("fedadam", {"lr": 0.0}, "server.lr must be a finite number > 0"),
        ("fedyogi", {"momentum": 1.0}, r"server.momentum must be a finite number in \[0, 1\)"),
        ("fedadam", {"beta2": float("nan")}, "server.beta2 must be"),
        ("fedyogi", {"tau": -1.0}, "server.tau must be a finite number > 0"),
        ("fedavgm", {"tau": 0.1}, "FedAvgM has none"),
    ],
)
def test_server_step_refuses_parameters_out_of_range(kind: str, given: dict[str, float],
                                                     message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        ServerStep.of(kind, **given)


def test_the_step_is_part_of_the_job_constant_under_he_only() -> None:
    he = HESpec(key_id="ab" * 16)
    common = {"dataset": "chest", "model": "small-cnn", "in_channels": 1, "num_classes": 2, "image_size": 28,
              "multi_label": False, "rounds": 2}
    spec = JobSpec(**common, he=he, server=ServerStep.of("fedadam", lr=0.05))  # type: ignore[arg-type]
    again = JobSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec and again.server == ServerStep("fedadam", 0.05, 0.9, 0.99, 1e-3)
    older = {k: v for k, v in spec.to_dict().items() if k != "server"}  # a spec from before this field
    assert JobSpec.from_dict(older).server is None
    with pytest.raises(TrainingError, match="only HE jobs have"):
        JobSpec(**common, server=ServerStep.of("fedyogi"))  # type: ignore[arg-type]
    with pytest.raises(TrainingError, match=r"server\.lr must be"):
        JobSpec.from_dict({**spec.to_dict(), "server": {**spec.to_dict()["server"], "lr": -1.0}})


# -- a site's own copy of the global state ---------------------------------------------------------
def _job(rounds: int = 4) -> JobSpec:
    return JobSpec(dataset="chest", model="small-cnn", in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=rounds, he=HESpec(key_id="ab" * 16),
                   server=ServerStep.of("fedadam"))


def test_site_steps_once_per_call_and_keeps_its_state(tmp_path: Path) -> None:
    spec, data_dir = _job(), DataDir(tmp_path)
    x0, h1 = step_global(data_dir, spec, 1, None, initial=X0)
    assert np.array_equal(x0, X0) and not (tmp_path / "jobs" / spec.job_id / STATE_FILE).exists()
    x1, h2 = step_global(data_dir, spec, 2, A1, initial=X0)
    expected, _ = server_update(spec.server, X0, A1, ServerState())  # type: ignore[arg-type]
    assert x1.tobytes() == expected.tobytes() and h2 != h1
    path = tmp_path / "jobs" / spec.job_id / STATE_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    again, h2_again = step_global(data_dir, spec, 2, A1, initial=X0)  # a retried call: no second step
    assert again.tobytes() == x1.tobytes() and h2_again == h2 and path.read_bytes() == before
    with pytest.raises(TrainingError, match="from another aggregate; a step is applied once per call"):
        step_global(data_dir, spec, 2, A1 * 2, initial=X0)
    other = DataDir(tmp_path / "other")  # another site with the same aggregates holds the same state
    step_global(other, spec, 2, A1, initial=X0)
    assert step_global(other, spec, 3, x1, initial=X0)[1] == step_global(data_dir, spec, 3, x1, initial=X0)[1]


def test_a_site_that_missed_an_aggregate_stays_out(tmp_path: Path) -> None:
    spec, data_dir = _job(), DataDir(tmp_path)
    step_global(data_dir, spec, 2, A1, initial=X0)
    for call in (4, 5):  # call 3's aggregate never reached this site
        with pytest.raises(MissedAggregate, match=rf"global state is at call 2, call {call} needs call "):
            step_global(data_dir, spec, call, A1, initial=X0)
    with pytest.raises(MissedAggregate, match="at call 1, call 3 needs call 2"):
        step_global(DataDir(tmp_path / "late"), spec, 3, A1, initial=X0)  # it missed call 1's aggregate


def test_a_damaged_state_is_refused_by_name_and_never_reset(tmp_path: Path) -> None:
    spec, data_dir = _job(), DataDir(tmp_path)
    step_global(data_dir, spec, 2, A1, initial=X0)
    path = tmp_path / "jobs" / spec.job_id / STATE_FILE
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CallLogCorrupt, match=f"{path} is damaged"):
        step_global(data_dir, spec, 3, A1, initial=X0)
    assert len(path.read_bytes()) == 50  # left for the owner to restore
    with pytest.raises(CallLogCorrupt, match="restore it from a backup"):
        SiteGlobal(data_dir, spec).load()


def test_review_shows_the_server_optimizer(tmp_path: Path) -> None:
    from domains.review.privacy import review_privacy

    data_dir = DataDir(tmp_path)
    data_dir.write_config(DatasiteConfig(name="st-anne", host="127.0.0.1", port=1, server_uid="u"))
    spec = JobSpec(dataset="chest", model="small-cnn", in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=2, he=HESpec(key_id="ab" * 16), sites=("st-anne", "st-bart"),
                   server=ServerStep.of("fedyogi", lr=0.02))
    lines = review_privacy(data_dir, spec.to_dict()).lines
    assert ("server optimizer FedYogi η=0.02, β1=0.9, β2=0.99, τ=0.001, applied at each site to the "
            "decrypted aggregate") in "\n".join(lines)
    plain = dataclasses.replace(spec, server=None)
    assert not any("server optimizer" in line for line in review_privacy(data_dir, plain.to_dict()).lines)
