"""What a strategy sends and how it reads what comes back: the codec's forms, each decoded once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from domains.shared import codec
from domains.shared.plain_model import PlainModel
from orchestrator.secure import SecureAggregation
from orchestrator.strategy import FedAvg, JobContext
from orchestrator.transport import CallOutcome
from privacy.he import EncryptedVector, init_keys, load_context

SIZES = {"a": 1, "b": 3, "c": 4}
GLOBAL = PlainModel.from_weights({"fc.bias": np.zeros(2, np.float32),
                                  "fc.weight": np.zeros((2, 2), np.float32)})


def _bound(strategy: FedAvg | SecureAggregation) -> FedAvg | SecureAggregation:
    strategy.bind(JobContext(job_id="j", rounds=2, sizes=SIZES))
    return strategy


def _ok(site: str, weights: object) -> CallOutcome:
    return CallOutcome(site, "ok", result={"weights": weights, "n_train": SIZES[site]})


def test_the_plaintext_model_travels_with_its_layout_and_every_reply_form_is_read() -> None:
    strategy = _bound(FedAvg())
    payloads = strategy.configure(1, list(SIZES), GLOBAL)
    sent = payloads["a"]["weights"]
    assert sent["format"] == "medsyft-model/1" and sent["layout"] == [["fc.bias", [2]], ["fc.weight", [2, 2]]]
    ones = PlainModel(np.ones(6, np.float32), GLOBAL.layout)
    outcomes = [_ok("a", codec.to_wire(ones)),  # the current form
                _ok("b", np.full(6, 2.0, np.float32)),  # a bare vector: a datasite of the previous version
                _ok("c", {**codec.to_wire(ones), "format": "medsyft-model/9"})]
    strategy.accept(1, list(SIZES), outcomes)
    assert [o.status for o in outcomes] == ["ok", "ok", "error"]
    assert "its update cannot be read: unknown value format 'medsyft-model/9'" in outcomes[2].error
    assert all(isinstance(o.value, PlainModel) for o in outcomes[:2])
    new = strategy.next_model(1, list(SIZES), outcomes[:2], GLOBAL, transport=None)  # type: ignore[arg-type]
    assert isinstance(new.model, PlainModel) and new.model.layout == GLOBAL.layout and new.params == 6
    assert np.allclose(new.model.vector, (1 * 1.0 + 3 * 2.0) / 4)  # FedAvg by sample count


def test_an_update_of_the_wrong_kind_is_its_sites_failure(tmp_path: Path) -> None:
    secret, public, _ = init_keys(tmp_path / "keys")
    encrypted = load_context(secret).encrypt_weighted(np.ones(6), weight=0.5, bound=4.0)
    plain = _bound(FedAvg())
    plain.configure(1, ["a"], GLOBAL)
    outcomes = [_ok("a", encrypted.to_dict())]
    plain.accept(1, ["a"], outcomes)
    assert outcomes[0].status == "error" and "not the PlainModel this job combines" in outcomes[0].error
    secure = _bound(SecureAggregation(FedAvg(), load_context(public)))
    outcomes = [_ok("a", encrypted.to_dict()), _ok("b", codec.to_wire(GLOBAL))]
    secure.accept(1, ["a", "b"], outcomes)
    assert outcomes[0].status == "ok" and isinstance(outcomes[0].value, EncryptedVector)
    assert outcomes[1].status == "error" and "not the EncryptedVector" in outcomes[1].error
    assert codec.nbytes(outcomes[0].value) == encrypted.nbytes


@pytest.mark.parametrize("model", [None, GLOBAL])
def test_a_payload_of_decoded_values_goes_out_in_its_wire_form(model: PlainModel | None) -> None:
    payload = codec.wire_payload({"call": 2, "weights": model, "skipped": [1]})
    assert payload["call"] == 2 and payload["skipped"] == [1]
    assert payload["weights"] is None if model is None else codec.from_wire(payload["weights"]) == model
