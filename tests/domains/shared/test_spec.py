"""A job constant survives storage: new fields round-trip, and specs stored before them still load."""

from __future__ import annotations

import json

import pytest

from domains.runtime.errors import TrainConfigError, TrainingError
from domains.shared.spec import JobSpec, TrainConfig


def _spec(**train: object) -> JobSpec:
    return JobSpec(dataset="chest", model="small-cnn", in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=2, train=TrainConfig(**train), sites=("h1", "h2"),  # type: ignore[arg-type]
                   job_id="fedprox00001")


def test_job_spec_round_trips_proximal_mu_through_json() -> None:
    spec = _spec(proximal_mu=0.01)
    stored = json.loads(json.dumps(spec.to_dict()))  # as run dirs, ledgers and constants hold it
    assert stored["train"]["proximal_mu"] == 0.01
    assert JobSpec.from_dict(stored) == spec


def test_job_spec_stored_before_fedprox_loads_with_mu_zero() -> None:
    stored = _spec().to_dict()
    del stored["train"]["proximal_mu"]  # what a spec written before the field existed holds
    loaded = JobSpec.from_dict(stored)
    assert loaded.train.proximal_mu == 0.0
    assert loaded == _spec()


def test_job_spec_with_a_bad_proximal_mu_is_refused() -> None:
    stored = _spec().to_dict()
    stored["train"]["proximal_mu"] = -1.0
    with pytest.raises(TrainConfigError, match=r"proximal_mu must be a finite number >= 0 \(got -1.0\)"):
        JobSpec.from_dict(stored)


def test_class_weights_are_checked_against_the_job() -> None:
    from domains.shared.spec import TrainConfig, balanced_weights

    assert balanced_weights([388, 3494]) == (5.0026, 0.5555)
    with pytest.raises(TrainConfigError, match="need an image of every class"):
        balanced_weights([10, 0])
    with pytest.raises(TrainConfigError, match="class_weights must be finite numbers > 0"):
        TrainConfig(class_weights=(1.0, -2.0)).validate()
    base = {"dataset": "d", "model": "small-cnn", "in_channels": 1, "image_size": 28, "rounds": 1}
    with pytest.raises(TrainingError, match="one value per class of a multi-class job"):
        JobSpec(**base, num_classes=3, multi_label=False, train=TrainConfig(class_weights=(1.0, 2.0)))
    with pytest.raises(TrainingError, match="one value per class of a multi-class job"):
        JobSpec(**base, num_classes=2, multi_label=True, train=TrainConfig(class_weights=(1.0, 2.0)))
    spec = JobSpec(**base, num_classes=2, multi_label=False, train=TrainConfig(class_weights=(1.0, 2.0)))
    assert JobSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec  # a list after JSON


def test_logit_adjustment_comes_from_counts_and_is_checked_against_the_job() -> None:
    from domains.shared.spec import TrainConfig, logit_offsets

    assert logit_offsets([388, 3494]) == (-2.3031, -0.1053)
    assert logit_offsets([388, 3494], tau=2.0) == (-4.6062, -0.2106)
    with pytest.raises(TrainConfigError, match="needs an image of every class"):
        logit_offsets([10, 0])
    with pytest.raises(TrainConfigError, match="logit_tau must be > 0"):
        logit_offsets([1, 2], tau=0.0)
    with pytest.raises(TrainConfigError, match="logit_adjustment must be finite numbers"):
        TrainConfig(logit_adjustment=(1.0, float("nan"))).validate()
    base = {"dataset": "d", "model": "small-cnn", "in_channels": 1, "image_size": 28, "rounds": 1}
    with pytest.raises(TrainingError, match="logit_adjustment need one value per class"):
        JobSpec(**base, num_classes=3, multi_label=False, train=TrainConfig(logit_adjustment=(-1.0, -0.5)))
    spec = JobSpec(**base, num_classes=2, multi_label=False, train=TrainConfig(logit_adjustment=(-2.3, -0.1)))
    assert JobSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec  # a list after JSON


@pytest.mark.parametrize(("every", "calls"), [(1, (1, 2, 3)), (2, (1, 3)), (3, (3,)), (50, (3,))])
def test_eval_every_counts_back_from_the_final_call(every: int, calls: tuple[int, ...]) -> None:
    spec = JobSpec(dataset="chest", model="small-cnn", in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=2, eval_every=every)
    assert spec.eval_calls == calls
    assert [c for c in range(0, 5) if spec.evaluates(c)] == list(calls)  # never outside 1..R+1
    assert JobSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_a_spec_stored_before_eval_every_evaluates_every_call() -> None:
    stored = _spec().to_dict()
    del stored["eval_every"]
    assert JobSpec.from_dict(stored).eval_calls == (1, 2, 3)


@pytest.mark.parametrize("every", [0, -1, 1.5, True])
def test_a_bad_eval_every_is_refused(every: object) -> None:
    stored = _spec().to_dict()
    stored["eval_every"] = every
    with pytest.raises(TrainingError, match=r"eval_every must be an integer >= 1: 1 evaluates every call"):
        JobSpec.from_dict(stored)
