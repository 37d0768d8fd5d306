"""The cross-site evaluation constant: what it may name, and that it survives the trip as JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from domains.shared.errors import TrainingError
from domains.shared.eval_spec import EvalSpec
from domains.shared.spec import HESpec, JobSpec


def _job(he: bool = True) -> JobSpec:
    return JobSpec(dataset="chest", model="small-cnn", in_channels=1, num_classes=2, image_size=28,
                   multi_label=False, rounds=2, he=HESpec(key_id="k" * 16) if he else None,
                   sites=("a", "b"))


def test_it_round_trips_through_json() -> None:
    ev = EvalSpec(job=_job(), dataset="chest-test", noise_multiplier=3.0, bins=20)
    again = EvalSpec.from_dict(json.loads(json.dumps(ev.to_dict())))
    assert again == ev and again.ledger_id == f"eval-{ev.eval_id}"


@pytest.mark.parametrize(("change", "message"), [
    ({"dataset": "chest"}, "trained on"),
    ({"dataset": ""}, "test dataset's name"),
    ({"noise_multiplier": 0.0}, "must be > 0"),
    ({"noise_multiplier": True}, "must be > 0"),
    ({"bins": 7}, "must divide 200"),
    ({"bins": 1}, "must divide 200"),
    ({"model": "best"}, "must be one of final, sent"),
    ({"eval_id": "../x"}, "hex digits"),
])
def test_a_constant_outside_the_rules_is_refused(change: dict[str, Any], message: str) -> None:
    values = {"job": _job(), "dataset": "chest-test", **change}
    with pytest.raises(TrainingError, match=message):
        EvalSpec(**values)


def test_a_plaintext_job_has_no_kept_final_model() -> None:
    with pytest.raises(TrainingError, match="kept no final model"):
        EvalSpec(job=_job(he=False), dataset="chest-test", model="final")
    assert EvalSpec(job=_job(he=False), dataset="chest-test", model="sent").model == "sent"


def test_unknown_fields_and_a_missing_job_are_refused() -> None:
    good = EvalSpec(job=_job(), dataset="chest-test").to_dict()
    with pytest.raises(TrainingError, match="unknown fields"):
        EvalSpec.from_dict({**good, "site_index": 0})
    with pytest.raises(TrainingError, match="naming its job"):
        EvalSpec.from_dict({"dataset": "chest-test"})
