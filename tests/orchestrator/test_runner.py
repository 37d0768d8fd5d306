"""The round loop, driven through a fake transport: no datasite processes, real HE and signatures.

The fake datasites (:class:`fake_sites.FakeSites`, in tests/fake_sites.py) answer each call the
way a datasite's approved job function does, with real TenSEAL and signatures; what is faked is
only the PySyft round trip, which tests/integration/ exercises with real datasite processes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_sites import INITIAL, SITES, SIZES, STEP, FakeSites, RosterSites

from domains.runtime.weights import Weights, flatten, unflatten
from domains.shared.plain_model import PlainModel
from domains.shared.spec import HESpec, JobSpec
from orchestrator.checkpoint import RunDir, RunState
from orchestrator.errors import QuorumLost
from orchestrator.runner import Federation
from orchestrator.secure import SecureAggregation, SignedRound
from orchestrator.strategy import FedAvg
from orchestrator.transport import CallOutcome, SyftTransport
from privacy.he import EncryptedVector


def _spec(rounds: int = 3, *, he: HESpec | None = None, min_contributions: int = 0) -> JobSpec:
    return JobSpec(dataset="chest", model="small-cnn", in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=rounds, he=he, sites=tuple(SITES) if he and he.roster else (),
                   min_contributions=min_contributions)


def _federation(tmp_path: Path, fake: FakeSites, strategy: Any) -> Federation:
    run_dir = RunDir(tmp_path / "run")
    state = run_dir.load_state() if run_dir.exists() else RunState(fake.spec, sizes=dict(SIZES))
    return Federation([], state, run_dir, strategy, round_timeout=30, sizes=dict(SIZES),
                      transport=fake, site_names=SITES)


def _mean(models: Mapping[str, Weights], names: list[str]) -> Weights:
    total = sum(SIZES[n] for n in names)
    return {k: sum(models[n][k] * (SIZES[n] / total) for n in names) for k in INITIAL}


def _expected(rounds: int, absent: Mapping[int, set[str]] | None = None) -> Weights:
    """FedAvg of the fake sites by hand: each round's mean over the sites that answered."""
    model = INITIAL
    for r in range(1, rounds + 1):
        names = [n for n in SITES if n not in (absent or {}).get(r, set())]
        model = _mean({n: {k: v + STEP[n] for k, v in model.items()} for n in names}, names)
    return model


def _close(a: Weights | PlainModel, b: Weights, atol: float = 1e-6) -> bool:
    a = a.to_weights() if isinstance(a, PlainModel) else a  # the loop's plaintext models carry a layout
    return all(np.allclose(a[k], b[k], atol=atol) for k in b)


# -- plaintext ------------------------------------------------------------------------------
def test_rounds_aggregate_checkpoint_and_record(tmp_path: Path) -> None:
    fake = FakeSites(_spec(rounds=3))
    fed = _federation(tmp_path, fake, FedAvg(min_sites=2))
    final = fed.run(INITIAL, progress=False)
    assert _close(final, _expected(3))
    assert sorted(fake.asked) == sorted((c, n) for c in range(1, 5) for n in SITES)  # 3 rounds + final
    run_dir = RunDir(tmp_path / "run")
    for r in range(4):
        stored = run_dir.load_global(r)
        assert stored is not None and _close(stored, _expected(r))
    state = run_dir.load_state()
    assert state.completed_round == 3 and state.finished
    timing = fed.timing()
    assert list(timing["round"]) == [1, 2, 3] and set(timing["sites_ok"]) == {3}
    assert list(timing["params"]) == [8, 8, 8]
    pooled = fed.metrics().query("site == 'pooled'")
    assert list(pooled["model_round"]) == [0, 1, 2, 3]  # the final call evaluates model 3


def test_selection_asks_only_the_chosen_sites(tmp_path: Path) -> None:
    fake = FakeSites(_spec(rounds=4))
    strategy = FedAvg(fraction=0.5, min_sites=2, seed=7)
    fed = _federation(tmp_path, fake, strategy)
    fed.run(INITIAL, progress=False)
    for r in range(1, 5):
        assert sorted(n for c, n in fake.asked if c == r) == sorted(strategy.select(r, SITES))
        assert len(strategy.select(r, SITES)) == 2
    assert sorted(n for c, n in fake.asked if c == 5) == SITES  # the final call asks everyone


def test_failed_and_timed_out_sites_are_left_out_of_the_round(tmp_path: Path) -> None:
    fake = FakeSites(_spec(rounds=3), fail={(2, "st-clare"): "timeout", (3, "st-anne"): "error"})
    fed = _federation(tmp_path, fake, FedAvg(min_sites=2))
    final = fed.run(INITIAL, progress=False)
    assert _close(final, _expected(3, {2: {"st-clare"}, 3: {"st-anne"}}))
    history = fed.history()
    assert history.query("round == 2 and site == 'st-clare'")["status"].item() == "timeout"
    assert history.query("round == 3 and site == 'st-anne'")["status"].item() == "error"
    assert list(fed.timing()["sites_ok"]) == [3, 2, 2]


def test_quorum_loss_stops_after_the_last_round_and_a_rerun_resumes(tmp_path: Path) -> None:
    fake = FakeSites(_spec(rounds=4), fail={(3, "st-anne"): "error", (3, "st-bart"): "timeout"})
    with pytest.raises(QuorumLost, match=r"round 3: only 1 of 3 sites succeeded, 2 needed .*from round 3"):
        _federation(tmp_path, fake, FedAvg(min_sites=2)).run(INITIAL, progress=False)
    run_dir = RunDir(tmp_path / "run")
    assert run_dir.load_state().completed_round == 2 and not run_dir.load_state().finished
    fake.fail.clear()
    fake.asked.clear()
    final = _federation(tmp_path, fake, FedAvg(min_sites=2)).run(INITIAL, progress=False)
    assert _close(final, _expected(4))  # as if never interrupted
    assert min(c for c, _ in fake.asked) == 3  # rounds 1-2 were not asked again
    assert RunDir(tmp_path / "run").load_state().finished


def test_a_frozen_site_times_out_and_the_round_goes_on(tmp_path: Path) -> None:
    """SyftTransport's own timeout: a call that never returns is abandoned, the round completes."""
    release = threading.Event()
    inner = FakeSites(_spec(rounds=1))

    def call(name: str, payload: dict[str, Any]) -> CallOutcome:
        if name == "st-bart" and payload["call"] == 1:
            release.wait(60)  # frozen until the test ends
        return inner.ask({name: payload})[0]

    transport = SyftTransport({}, {}, "chest", round_timeout=1.0, sizes=SIZES, call=call)
    try:
        outcomes = transport.ask(FedAvg().configure(1, SITES, INITIAL))
    finally:
        release.set()
    status = {o.site: o.status for o in outcomes}
    assert status == {"st-anne": "ok", "st-bart": "timeout", "st-clare": "ok"}
    assert [o.site for o in outcomes] == SITES  # in the order asked, whatever order they finished
    assert "no answer within 1 s" in next(o.error for o in outcomes if o.site == "st-bart")


# -- encrypted, without a roster: the orchestrator adds ciphertexts it cannot read -------------
@pytest.fixture(scope="module")
def federation_keys(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from privacy.ceremony import init_federation

    return init_federation(tmp_path_factory.mktemp("keys") / "keys", SITES)


def test_encrypted_sum_path(tmp_path: Path, federation_keys: Any) -> None:
    from privacy.he import load_context

    public, secret = load_context(federation_keys.public_path), load_context(federation_keys.secret_path)
    fake = FakeSites(_spec(rounds=2, he=HESpec(key_id=public.key_id)), secret=secret,
                     fail={(2, "st-bart"): "error"})
    fed = _federation(tmp_path, fake, SecureAggregation(FedAvg(min_sites=2), public))
    final = fed.run(None, progress=False)
    assert isinstance(final, EncryptedVector)
    with pytest.raises(Exception, match="secret"):
        public.decrypt_mean(final)  # the orchestrator's context cannot read what it added
    plain = unflatten(secret.decrypt_mean(final), flatten(INITIAL)[1])
    assert _close(plain, _expected(2, {2: {"st-bart"}}), atol=1e-4)


# -- encrypted with a roster: the sites verify and add the signed parts themselves -------------
def _roster_run(tmp_path: Path, federation_keys: Any, fail: dict[tuple[int, str], str]
                ) -> tuple[Federation, RosterSites]:
    from privacy.he import load_context
    from privacy.roster import load_site_kit

    public, secret = load_context(federation_keys.public_path), load_context(federation_keys.secret_path)
    kits = {n: load_site_kit(federation_keys.kits[n]) for n in SITES}
    roster = federation_keys.roster
    spec = _spec(rounds=3, he=HESpec(key_id=public.key_id, roster=roster.fingerprint))
    fake = RosterSites(spec, fail=fail, secret=secret, kits=kits)
    return _federation(tmp_path, fake, SecureAggregation(FedAvg(min_sites=2), public, roster=roster)), fake


def test_roster_path_forwards_parts_and_recovers_a_dropped_site(tmp_path: Path, federation_keys: Any) -> None:
    fed, fake = _roster_run(tmp_path, federation_keys, {(2, "st-clare"): "error"})
    final = fed.run(None, progress=False)
    assert isinstance(final, SignedRound) and final.sites == tuple(SITES) and final.call == 3
    # round 2 lost st-clare: both survivors were asked for their mask recoveries, once
    assert sorted(n for c, n in fake.asked if c == "recover") == ["st-anne", "st-bart"]
    stored = RunDir(tmp_path / "run").load_global(2)
    assert isinstance(stored, SignedRound) and len(stored.recoveries) == 2
    verified = fed.strategy.verify(final, job_id=fake.spec.job_id, min_sites=2)  # type: ignore[attr-defined]
    from privacy.secagg import decrypt_round

    plain = unflatten(decrypt_round(fake.secret, verified), flatten(INITIAL)[1])  # type: ignore[arg-type]
    # round 2's shares were those of all three asked sites; the survivors' mean divides them out
    assert _close(plain, _expected(3, {2: {"st-clare"}}), atol=1e-3)
    timing = fed.timing()
    assert list(timing["recoveries"]) == [0, 2, 0] and timing["download_MB"].iloc[1] > 0


def test_roster_path_stops_when_a_recovery_fails(tmp_path: Path, federation_keys: Any) -> None:
    fed, _ = _roster_run(tmp_path, federation_keys, {(2, "st-clare"): "timeout", (-2, "st-bart"): "error"})
    with pytest.raises(QuorumLost, match=r"round 2: mask recovery failed at st-bart"):
        fed.run(None, progress=False)
    assert RunDir(tmp_path / "run").load_state().completed_round == 1


def test_roster_path_refuses_a_part_signed_for_another_site_set(tmp_path: Path, federation_keys: Any) -> None:
    fed, fake = _roster_run(tmp_path, federation_keys, {})
    honest = fake._one

    def lying(name: str, payload: dict[str, Any]) -> CallOutcome:
        if name == "st-bart" and payload.get("call") == 1:
            payload = {**payload, "round_sites": ["st-anne", "st-bart"]}  # signs a smaller set
        return honest(name, payload)

    fake._one = lying  # type: ignore[method-assign]
    final = fed.run(None, progress=False)
    row = fed.history().query("round == 1 and site == 'st-bart'")
    assert row["status"].item() == "error" and "rule site-set" in row["error"].item()
    assert isinstance(final, SignedRound) and final.sites == tuple(SITES)
    # its refused part was never forwarded: the others recovered their masks with it; at call 2
    # it finds its own part of call 1 missing and refuses to train, and at call 3 it rejoins
    assert list(fed.timing()["recoveries"]) == [2, 2, 0]
    refused = fed.history().query("round == 2 and site == 'st-bart'")["error"].item()
    assert "own part ('st-bart') is not among" in refused
    recovered = sorted(n for c, n in fake.asked if c == "recover")
    assert recovered == ["st-anne", "st-anne", "st-clare", "st-clare"]


# -- the strategies on the same protocol ------------------------------------------------------
class PoisonedSites(FakeSites):
    """st-clare sends a model scaled by 1000 at every call (a broken or malicious site)."""

    def _one(self, name: str, payload: dict[str, Any]) -> CallOutcome:
        outcome = super()._one(name, payload)
        if name == "st-clare" and isinstance(outcome.result.get("weights"), np.ndarray):
            outcome.result["weights"] = outcome.result["weights"] * 1000
        return outcome


@pytest.mark.parametrize("robust", [True, False])
def test_median_resists_one_poisoned_site_where_fedavg_does_not(tmp_path: Path, robust: bool) -> None:
    from orchestrator.strategy import FedMedian

    fake = PoisonedSites(_spec(rounds=2))
    strategy = FedMedian(min_sites=2) if robust else FedAvg(min_sites=2)
    final = _federation(tmp_path, fake, strategy).run(INITIAL, progress=False)
    largest = float(np.abs(final.vector).max())
    if robust:  # the median of three is an honest site's value at every coordinate
        assert largest < 1.0
    else:
        assert largest > 100  # FedAvg follows the poisoned site


def test_trimmed_mean_and_fedprox_run_on_the_same_loop(tmp_path: Path) -> None:
    from orchestrator.strategy import FedProx, TrimmedMean

    trimmed = _federation(tmp_path / "t", FakeSites(_spec(rounds=2)), TrimmedMean(beta=0.4, min_sites=2))
    final = trimmed.run(INITIAL, progress=False)
    # beta 0.4 of three sites cuts one at each end: the middle site's step, unweighted
    middle = {k: v + 2 * 0.01 for k, v in INITIAL.items()}  # st-anne's step is the median step
    assert _close(final, middle)
    prox = _federation(tmp_path / "p", FakeSites(_spec(rounds=2)), FedProx(proximal_mu=0.1, min_sites=2))
    assert _close(prox.run(INITIAL, progress=False), _expected(2))  # FedAvg's aggregation
    with pytest.raises(ValueError, match="mu > 0"):
        FedProx(proximal_mu=0)


def test_strategy_for_maps_job_toml_and_he_wraps_only_means(federation_keys: Any) -> None:
    from orchestrator.config import JobConfig, SiteConfig
    from orchestrator.job import strategy_for
    from orchestrator.strategy import FedMedian, FedProx, TrimmedMean
    from privacy.he import load_context

    site = [SiteConfig(name="a", url="http://127.0.0.1:1", email="e")]
    kinds = {"fedavg": FedAvg, "fedprox": FedProx, "fedmedian": FedMedian, "trimmed-mean": TrimmedMean}
    for name, cls in kinds.items():
        mu = 0.5 if name == "fedprox" else 0
        made = strategy_for(JobConfig(dataset="d", sites=site, strategy=name, proximal_mu=mu,
                                      trim_fraction=0.3))
        assert type(made) is cls
        if isinstance(made, TrimmedMean):
            assert made.beta == 0.3
    public = load_context(federation_keys.public_path)
    SecureAggregation(FedProx(proximal_mu=0.1), public)  # a weighted mean: fine under HE
    with pytest.raises(TypeError, match="weighted mean"):
        SecureAggregation(FedMedian(), public)
