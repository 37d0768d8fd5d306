"""FedAvgM, FedAdam and FedYogi on the round loop, through the fake transport (tests/fake_sites.py).

In plaintext the orchestrator takes the step: the trajectory is the hand computation with the
module's step, and a run interrupted by quorum loss resumes bit-identical. Under HE each fake site
takes the step itself with the real site-side state (``domains.runtime.site_global``), so the
state hashes the sites report show one global state per round; the real release code
(``domains.runtime.final_model.run_release``) then releases x_R, which the orchestrator unmasks.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_sites import INITIAL, SITES, SIZES, STEP, FakeSites, RosterSites

from domains.runtime import final_model
from domains.runtime.errors import TrainingError
from domains.runtime.site_global import SiteGlobal, step_global
from domains.runtime.weights import Weights, fedavg, flatten, unflatten
from domains.shared.plain_model import PlainModel
from domains.shared.server_step import ServerState, ServerStep, server_update
from domains.shared.spec import HESpec, JobSpec
from domains.site import he_key
from domains.site.datadir import DataDir, DatasiteConfig
from orchestrator import release
from orchestrator.checkpoint import RunDir, RunState
from orchestrator.errors import ConfigError, QuorumLost
from orchestrator.runner import Federation
from orchestrator.secure import SecureAggregation
from orchestrator.strategy import FedAvg, ServerOptimizer, Strategy
from orchestrator.transport import CallOutcome
from privacy.he import fedavg_tolerance, fixed_point_scale

STEPS = {"fedavgm": ServerStep.of("fedavgm", momentum=0.9), "fedadam": ServerStep.of("fedadam", lr=0.02),
         "fedyogi": ServerStep.of("fedyogi", lr=0.02)}
LAYOUT = flatten(INITIAL)[1]


def _spec(rounds: int, *, he: HESpec | None = None, server: ServerStep | None = None) -> JobSpec:
    return JobSpec(dataset="chest", model="small-cnn", in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=rounds, he=he, server=server, sites=tuple(SITES))


def _federation(run: Path, fake: FakeSites, strategy: Strategy) -> Federation:
    run_dir = RunDir(run)
    state = run_dir.load_state() if run_dir.exists() else RunState(fake.spec, sizes=dict(SIZES))
    return Federation([], state, run_dir, strategy, round_timeout=30, sizes=dict(SIZES), transport=fake,
                      site_names=SITES)


def _by_hand(step: ServerStep, rounds: int) -> list[Weights]:
    """Each round: FedAvg's mean of the fake sites' models (each adds its STEP), then the module's step."""
    models, state = [INITIAL], ServerState()
    for _ in range(rounds):
        model = models[-1]
        mean = fedavg([({k: v + STEP[n] for k, v in model.items()}, SIZES[n]) for n in SITES])
        vector, state = server_update(step, flatten(model)[0], flatten(mean)[0], state)
        models.append(unflatten(vector, LAYOUT))
    return models


def _same(a: Weights | PlainModel, b: Weights | PlainModel) -> bool:
    a, b = (m.to_weights() if isinstance(m, PlainModel) else m for m in (a, b))  # models carry a layout
    return a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)


# -- plaintext: the orchestrator takes the step ------------------------------------------------
@pytest.mark.parametrize("kind", sorted(STEPS))
def test_plaintext_trajectory_is_the_hand_computation(tmp_path: Path, kind: str) -> None:
    fed = _federation(tmp_path / "run", FakeSites(_spec(3)), ServerOptimizer(STEPS[kind], min_sites=2))
    final_model = fed.run(INITIAL, progress=False)
    expected = _by_hand(STEPS[kind], 3)
    for r in range(4):
        assert _same(RunDir(tmp_path / "run").load_global(r), expected[r]), r  # type: ignore[arg-type]
    assert _same(final_model, expected[3])
    plain = _federation(tmp_path / "fedavg", FakeSites(_spec(3)), FedAvg(min_sites=2)).run(INITIAL,
                                                                                            progress=False)
    assert not np.allclose(final_model.vector, plain.vector, atol=1e-4)  # the step mattered


@pytest.mark.parametrize("kind", sorted(STEPS))
def test_a_run_resumed_after_quorum_loss_ends_bit_identical(tmp_path: Path, kind: str) -> None:
    step = STEPS[kind]
    straight = _federation(tmp_path / "straight", FakeSites(_spec(4)), ServerOptimizer(step, min_sites=2))
    uninterrupted = straight.run(INITIAL, progress=False)
    fake = FakeSites(_spec(4), fail={(3, "st-anne"): "error", (3, "st-bart"): "timeout"})
    with pytest.raises(QuorumLost, match="round 3"):
        _federation(tmp_path / "run", fake, ServerOptimizer(step, min_sites=2)).run(INITIAL, progress=False)
    assert (tmp_path / "run" / "strategy-2.npz").exists()  # the moments after round 2, beside global-2.npz
    shutil.copytree(tmp_path / "run", tmp_path / "lost")
    fake.fail.clear()
    resumed = _federation(tmp_path / "run", fake, ServerOptimizer(step, min_sites=2)).run(INITIAL,
                                                                                        progress=False)
    assert _same(resumed, uninterrupted)
    (tmp_path / "lost" / "strategy-2.npz").unlink()  # without its moments a resume would drift: refused
    lost = _federation(tmp_path / "lost", fake, ServerOptimizer(step, min_sites=2))
    with pytest.raises(ConfigError, match=f"holds no server optimizer state, but the job's strategy is "
                                          f"{kind}"):
        lost.run(INITIAL, progress=False)
    with pytest.raises(ConfigError, match="keeps none: resume with the job's original strategy"):
        FedAvg().restore(RunDir(tmp_path / "run").load_strategy(4))


# -- under HE: every site takes the step itself --------------------------------------------------
@dataclass
class SteppingSites(RosterSites):
    """Sites that keep their own global state with the real site-side code, as the runtime does."""

    root: Path = Path()
    hashes: dict[tuple[str, int], str] = field(default_factory=dict)

    def _received(self, name: str, call: int, payload: dict[str, Any]) -> tuple[Weights, str]:
        mean, summed, transcript = self._decrypted(name, call, payload)
        data_dir = DataDir(self.root / name)
        vector, state_hash = step_global(data_dir, self.spec, call, mean, initial=flatten(INITIAL)[0])
        self.hashes[(name, call)] = state_hash
        if call == self.spec.max_calls and summed is not None:
            final_model.keep_final(data_dir, self.spec, summed, vector, transcript=transcript,
                             state_hash=state_hash)
        return unflatten(vector, LAYOUT), transcript

    def _one(self, name: str, payload: dict[str, Any]) -> CallOutcome:
        outcome = super()._one(name, payload)
        if outcome.status == "ok" and (name, payload.get("call")) in self.hashes:
            outcome.result["global_state_hash"] = self.hashes[(name, payload["call"])]
        return outcome


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from privacy.ceremony import init_federation

    return init_federation(tmp_path_factory.mktemp("keys") / "keys", SITES)


def _he_run(tmp_path: Path, keys: Any, *, roster: bool, rounds: int = 3, fail: dict[tuple[int, str], str]
            | None = None) -> tuple[Federation, SteppingSites]:
    from privacy.he import load_context
    from privacy.roster import load_site_kit

    public, secret = load_context(keys.public_path), load_context(keys.secret_path)
    he = HESpec(key_id=public.key_id, roster=keys.roster.fingerprint if roster else "")
    spec = _spec(rounds, he=he, server=STEPS["fedadam"])
    kits = {n: load_site_kit(keys.kits[n]) for n in SITES} if roster else {}
    fake = SteppingSites(spec, fail=fail or {}, secret=secret, kits=kits, root=tmp_path / "sites")
    for name in SITES:  # each fake site's data directory: its name and the hospitals' key
        data_dir = DataDir(tmp_path / "sites" / name)
        data_dir.path.mkdir(parents=True)
        data_dir.write_config(DatasiteConfig(name=name, host="127.0.0.1", port=1, server_uid=name))
        he_key.install(data_dir, keys.secret_path)
    aggregation = SecureAggregation(ServerOptimizer(STEPS["fedadam"], min_sites=2), public,
                                    roster=keys.roster if roster else None)
    return _federation(tmp_path / "run", fake, aggregation), fake


def _recomputed(fed: Federation, fake: SteppingSites) -> np.ndarray:
    """x_R from the run's own encrypted sums, decrypted with the hospitals' key: the plaintext
    re-computation."""
    strategy = fed.strategy
    assert isinstance(strategy, SecureAggregation) and fake.secret is not None
    x, state = flatten(INITIAL)[0], ServerState()
    for r in range(1, fake.spec.rounds + 1):
        summed = release.final_ciphertext(fed.run_dir, replace(fake.spec, rounds=r), strategy)  # round r's
        x, state = server_update(STEPS["fedadam"], x, fake.secret.decrypt_mean(summed), state)
    return x


def _release(fed: Federation, fake: SteppingSites, monkeypatch: pytest.MonkeyPatch,
             **tamper: Any) -> np.ndarray:
    """Every site's real release code, then the orchestrator's unmasking."""
    spec = fake.spec
    summed = release.final_ciphertext(fed.run_dir, spec, fed.strategy)  # type: ignore[arg-type]
    payload = {**release.release_payload(fed.run_dir, spec, summed), **tamper}
    results = []
    for index, name in enumerate(SITES):
        monkeypatch.setenv("MEDSYFT_DATA_DIR", str(fake.root / name))
        constant = {"job": spec.to_dict(), "site_index": index, "n_sites": len(SITES), "sites": list(SITES)}
        results.append(final_model.run_release(constant, payload))
    return release.unmask_final(spec, summed, payload, results)


@pytest.mark.parametrize("roster", [False, True], ids=["sum", "roster"])
def test_every_site_holds_one_global_state_and_the_release_is_x_r(
        tmp_path: Path, keys: Any, monkeypatch: pytest.MonkeyPatch, roster: bool) -> None:
    fed, fake = _he_run(tmp_path, keys, roster=roster)
    fed.run(None, progress=False)
    history, metrics = fed.history(), fed.metrics().query("site != 'pooled'")
    per_call = history.groupby("round")["global_state_hash"].nunique()
    per_model = metrics.groupby("model_round")["global_state_hash"].nunique()
    assert list(per_call) == [1, 1, 1] and list(per_model) == [1, 1, 1, 1]  # one state per round, all sites
    assert metrics.groupby("model_round")["global_state_hash"].count().tolist() == [3, 3, 3, 3]
    assert metrics["global_state_hash"].nunique() == 4  # and a new one every round
    states = [SiteGlobal(DataDir(fake.root / n), fake.spec).load() for n in SITES]
    assert all(s is not None and s.call == 4 for s in states)
    x_r = states[0].model  # type: ignore[union-attr]
    assert all(s.model.tobytes() == x_r.tobytes() for s in states)  # type: ignore[union-attr]
    assert _recomputed(fed, fake).tobytes() == x_r.tobytes()  # the plaintext re-computation, bit for bit
    assert np.allclose(x_r, flatten(_by_hand(STEPS["fedadam"], 3)[3])[0], atol=1e-3)  # HE only rounds
    released = _release(fed, fake, monkeypatch)
    tolerance = fedavg_tolerance(n_parts=1, scale=fixed_point_scale(bound=4.0), weight_sum=1.0, bound=4.0)
    assert np.max(np.abs(released - x_r)) <= tolerance
    final_hash = metrics.query("model_round == 3")["global_state_hash"].iloc[0]
    assert states[0].digest(fake.spec.job_id) == final_hash  # type: ignore[union-attr]
    with pytest.raises(TrainingError, match="release names global state 000000000000"):
        _release(fed, fake, monkeypatch, global_state_hash="0" * 64)


def test_a_site_that_missed_an_aggregate_refuses_and_the_others_go_on(
        tmp_path: Path, keys: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fed, fake = _he_run(tmp_path, keys, roster=False, fail={(2, "st-bart"): "timeout"})
    fed.run(None, progress=False)
    history = fed.history().set_index(["round", "site"])
    assert history.loc[(2, "st-bart"), "status"] == "timeout"
    refused = history.loc[(3, "st-bart"), "error"]
    assert "missed an aggregate" in refused and "global state is at call 1, call 3 needs call 2" in refused
    metrics = fed.metrics().query("site != 'pooled'")
    assert "st-bart" not in set(metrics.query("model_round >= 2")["site"])
    assert metrics.groupby("model_round")["global_state_hash"].nunique().tolist() == [1, 1, 1, 1]
    with pytest.raises(TrainingError, match="has no encrypted final model on this datasite"):
        _release(fed, fake, monkeypatch)  # st-bart holds no final model: the release needs every site


def test_he_wraps_a_server_optimizer_only_when_every_site_is_asked(keys: Any) -> None:
    from privacy.he import load_context

    public = load_context(keys.public_path)
    SecureAggregation(ServerOptimizer(STEPS["fedyogi"]), public)
    with pytest.raises(ValueError, match=r"ask every site each round \(fraction is 0.5\)"):
        SecureAggregation(ServerOptimizer(STEPS["fedyogi"], fraction=0.5), public)


def test_strategy_for_maps_the_server_optimizers() -> None:
    from orchestrator.config import JobConfig, SiteConfig
    from orchestrator.job import strategy_for

    site = [SiteConfig(name="a", url="http://127.0.0.1:1", email="e")]
    made = strategy_for(JobConfig(dataset="d", sites=site, strategy="fedadam", server_tau=0.01, min_sites=1))
    assert isinstance(made, ServerOptimizer) and made.step == ServerStep("fedadam", 0.1, 0.9, 0.99, 0.01)
