"""DP accounting agrees with Opacus, and the noise it picks meets the ε it was asked for."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.accounting import (
    DPConfig,
    compact,
    epsilon,
    eval_entry,
    job_history,
    noise_for_target,
    sample_rate,
    steps_per_epoch,
    training_entry,
)
from privacy.errors import DPConfigError

DELTA = 1e-5


def _stepped(accountant: object, history: list[tuple[float, float, int]]) -> None:
    for sigma, q, steps in history:
        for _ in range(steps):
            accountant.step(noise_multiplier=sigma, sample_rate=q)  # type: ignore[attr-defined]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Opacus's PRV takes log(1 - q) at q = 1
@pytest.mark.parametrize("name", ["rdp", "prv"])
def test_epsilon_matches_opacus_accountant_stepped(name: str) -> None:
    from opacus.accountants import create_accountant

    history = [
        eval_entry(eval_noise_multiplier=20.0),
        training_entry(noise_multiplier=1.1, n_samples=100, batch_size=20, epochs=3),
        eval_entry(eval_noise_multiplier=20.0),
        training_entry(noise_multiplier=1.1, n_samples=100, batch_size=20, epochs=3),
    ]
    accountant = create_accountant(mechanism=name)
    _stepped(accountant, history)
    expected = accountant.get_epsilon(delta=DELTA)
    assert epsilon(history, delta=DELTA, accountant=name) == pytest.approx(expected, rel=1e-6)


def test_epsilon_matches_privacy_engine_report() -> None:
    torch = pytest.importorskip("torch")
    from opacus import PrivacyEngine

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(50, 3), torch.randint(0, 2, (50,)))
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    model = torch.nn.Linear(3, 2)
    engine = PrivacyEngine(accountant="rdp")
    model, optimizer, loader = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), data_loader=loader,
        noise_multiplier=0.9, max_grad_norm=1.0,
    )
    for _ in range(2):
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    ours = epsilon([training_entry(noise_multiplier=0.9, n_samples=50, batch_size=16, epochs=2)], delta=DELTA)
    assert ours == pytest.approx(engine.get_epsilon(DELTA), rel=1e-9)


def test_sample_rate_is_one_over_dataloader_length() -> None:
    torch = pytest.importorskip("torch")
    for n, batch in [(800, 64), (64, 64), (10, 64), (129, 32)]:
        loader = torch.utils.data.DataLoader(range(n), batch_size=batch)
        assert steps_per_epoch(n_samples=n, batch_size=batch) == len(loader)
        assert sample_rate(n_samples=n, batch_size=batch) == 1 / len(loader)


def test_eval_entry_has_the_gaussian_mechanism_rdp() -> None:
    from opacus.accountants.analysis.rdp import compute_rdp

    sigma, q, steps = eval_entry(eval_noise_multiplier=20.0)
    orders = [1.5, 2.0, 8.0, 32.0]
    rdp = compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=orders)
    np.testing.assert_allclose(rdp, [a / (2 * 20.0**2) for a in orders])


def test_epsilon_of_empty_history_is_zero() -> None:
    assert epsilon([], delta=DELTA) == 0.0
    assert epsilon([(1.0, 0.1, 0)], delta=DELTA, accountant="prv") == 0.0


def test_epsilon_composition_is_tighter_than_summing() -> None:
    job = [training_entry(noise_multiplier=1.0, n_samples=800, batch_size=64, epochs=16)]
    one = epsilon(job, delta=DELTA)
    assert one < epsilon(job + job, delta=DELTA) < 2 * one


def test_compact_merges_repeated_mechanisms_without_changing_epsilon() -> None:
    train = training_entry(noise_multiplier=1.0, n_samples=800, batch_size=64, epochs=2)
    history = [train, eval_entry()] * 8 + [eval_entry()]
    assert compact(history) == [(1.0, 1 / 13, 16 * 13), (20.0, 1.0, 9)]
    assert epsilon(history, delta=DELTA) == pytest.approx(epsilon(compact(history), delta=DELTA), rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([0.8, 1.0, 3.0, 20.0]), st.sampled_from([0.05, 0.2, 1.0]),
                       st.integers(0, 50)), max_size=6),
    st.tuples(st.sampled_from([0.8, 20.0]), st.sampled_from([0.05, 1.0]), st.integers(1, 20)),
)
def test_epsilon_never_falls_when_a_release_is_added(history: list, extra: tuple) -> None:
    assert epsilon([*history, extra], delta=DELTA) >= epsilon(history, delta=DELTA)


@pytest.mark.parametrize(("accountant", "evals"), [("rdp", 0), ("rdp", 9), ("prv", 9)])
def test_noise_for_target_meets_target_within_two_percent(accountant: str, evals: int) -> None:
    target = 4.0
    sigma = noise_for_target(target_epsilon=target, delta=DELTA, n_samples=800, batch_size=64,
                             epochs_total=16, accountant=accountant, eval_entries=evals)
    history = [training_entry(noise_multiplier=sigma, n_samples=800, batch_size=64, epochs=16)]
    history += [eval_entry()] * evals
    eps = epsilon(history, delta=DELTA, accountant=accountant)
    assert 0.98 * target <= eps <= target


def test_noise_for_target_agrees_with_opacus_without_evaluations() -> None:
    from opacus.accountants.utils import get_noise_multiplier

    ours = noise_for_target(target_epsilon=4.0, delta=DELTA, n_samples=800, batch_size=64, epochs_total=16)
    theirs = get_noise_multiplier(target_epsilon=4.0, target_delta=DELTA, sample_rate=1 / 13, steps=208)
    assert ours == pytest.approx(theirs, rel=0.02)


def test_noise_for_target_refuses_when_evaluations_alone_exceed_it() -> None:
    with pytest.raises(DPConfigError, match="evaluation releases alone"):
        noise_for_target(target_epsilon=0.1, delta=DELTA, n_samples=800, batch_size=64, epochs_total=1,
                         eval_entries=50, eval_noise_multiplier=2.0)


def test_job_history_from_target_stays_within_target() -> None:
    config = DPConfig(target_epsilon=3.0)
    history = job_history(config, n_samples=800, batch_size=64, epochs_per_call=2, training_calls=8,
                          eval_calls=9)
    assert len(history) == 17
    assert 0.98 * 3.0 <= epsilon(history, delta=config.delta) <= 3.0


def test_job_history_with_fixed_noise_lists_every_call() -> None:
    history = job_history(DPConfig(noise_multiplier=1.0), n_samples=800, batch_size=64, epochs_per_call=2,
                          training_calls=8, eval_calls=9)
    assert history == [(1.0, 1 / 13, 26)] * 8 + [(20.0, 1.0, 1)] * 9


@pytest.mark.parametrize(
    ("config", "rule"),
    [
        (DPConfig(), "exactly one of noise_multiplier and target_epsilon"),
        (DPConfig(noise_multiplier=1.0, target_epsilon=3.0), "exactly one"),
        (DPConfig(noise_multiplier=0.0), r"noise_multiplier must be a finite number > 0 \(got 0.0\)"),
        (DPConfig(target_epsilon=math.inf), "target_epsilon must be a finite number > 0"),
        (DPConfig(noise_multiplier=1.0, max_grad_norm=-1.0), "max_grad_norm must be"),
        (DPConfig(noise_multiplier=1.0, delta=1.0), r"delta must be in \(0, 1\)"),
        (DPConfig(noise_multiplier=1.0, accountant="gdp"), "accountant must be one of rdp, prv"),
        (DPConfig(noise_multiplier=1.0, eval_noise_multiplier=0.0), "eval_noise_multiplier must be"),
    ],
)
def test_dpconfig_validate_names_the_broken_rule(config: DPConfig, rule: str) -> None:
    with pytest.raises(DPConfigError, match=rule):
        config.validate()


@pytest.mark.parametrize("entry", [(1.0, 0.0, 3), (1.0, 1.5, 3), (-1.0, 0.1, 3), (1.0, 0.1, -1), (1.0, 0.1)])
def test_epsilon_refuses_malformed_entries(entry: tuple) -> None:
    with pytest.raises(DPConfigError):
        epsilon([entry], delta=DELTA)
