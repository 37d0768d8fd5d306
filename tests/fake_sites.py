"""The datasites of a job as the round loop's unit tests see them: a fake transport, real HE.

:class:`FakeSites` answers each call the way a datasite's approved job function does (same
payload keys, same result keys): it "trains" by adding a fixed per-site step (:data:`STEP`) to the
model it was sent, so every expected global model can be computed by hand. Under HE and a roster
it really encrypts, masks and signs its part with the federation's keys (``privacy.secagg``), and
really verifies and decrypts the parts it is forwarded, so the encrypted path runs end to end
without PySyft. What is faked is only the PySyft round trip, which tests/integration/ exercises
with real datasite processes. Shared by tests/orchestrator/test_runner.py and
test_server_optimizers.py.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from domains.runtime.errors import TrainingError
from domains.runtime.weights import Weights, flatten, unflatten
from domains.shared.codec import from_wire
from domains.shared.counts import EvalResult
from domains.shared.spec import JobSpec
from orchestrator.transport import CallOutcome
from privacy.errors import PrivacyError
from privacy.he import EncryptedVector, HEContext

SITES = ["st-anne", "st-bart", "st-clare"]
SIZES = {"st-anne": 100, "st-bart": 300, "st-clare": 600}
STEP = {"st-anne": 0.01, "st-bart": -0.02, "st-clare": 0.03}  # each site's "training" step
INITIAL: Weights = {"conv.weight": np.zeros((2, 3), np.float32), "fc.bias": np.full(2, 0.5, np.float32)}


def eval_result(n: int) -> dict[str, Any]:
    hist = np.zeros((2, 2, 10), np.int64)
    hist[1, 1, 9] = hist[0, 0, 9] = n // 2
    return EvalResult(n=n, loss=0.5, accuracy=0.8, auc=0.9, score_histograms=hist).to_dict()


@dataclass
class FakeSites:
    """The datasites of one job, answering as their approved job function would."""

    spec: JobSpec
    fail: dict[tuple[int, str], str] = field(default_factory=dict)  # (call, site) -> "error"/"timeout"
    secret: HEContext | None = None  # the hospitals' key (HE jobs)
    kits: dict[str, Any] = field(default_factory=dict)  # roster jobs: each site's signing kit
    asked: list[tuple[int | str, str]] = field(default_factory=list)
    own: dict[tuple[str, int], Any] = field(default_factory=dict)  # (site, call) -> its signed part
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ask(self, payloads: Mapping[str, dict[str, Any]]) -> list[CallOutcome]:
        return [self._one(name, payload) for name, payload in payloads.items()]

    def _one(self, name: str, payload: dict[str, Any]) -> CallOutcome:
        if "recover" in payload:
            return self._recover(name, payload)
        call = payload["call"]
        with self.lock:
            self.asked.append((call, name))
        assert payload["skipped"] == list(range(1, call))
        if (why := self.fail.get((call, name))) is not None:
            return CallOutcome(name, why, error=f"{name} {why} at call {call}")
        try:
            model, transcript = self._received(name, call, payload)
        except (PrivacyError, TrainingError) as exc:  # the runtime's refusal reaches the scientist
            return CallOutcome(name, "error", error=f"{type(exc).__name__}: {exc}")
        result: dict[str, Any] = {"eval": eval_result(SIZES[name] // 4), "n_train": SIZES[name],
                                  "train_seconds": 0.1}
        if call > self.spec.rounds:  # the final call evaluates only
            return CallOutcome(name, "ok", result={**result, "weights": None})
        trained = {k: v + STEP[name] for k, v in model.items()}
        result["weights"] = self._send(name, call, trained, payload, transcript)
        return CallOutcome(name, "ok", result=result, call_s=0.2, legs={"upload_s": 0.05})

    def _received(self, name: str, call: int, payload: dict[str, Any]) -> tuple[Weights, str]:
        """The model this call trains from, and the transcript of the sum it was verified as."""
        if self.secret is None:
            return (INITIAL if call == 1 else from_wire(payload["weights"]).to_weights()), ""
        mean, _, transcript = self._decrypted(name, call, payload)
        return (INITIAL if mean is None else unflatten(mean, flatten(INITIAL)[1])), transcript

    def _decrypted(self, name: str, call: int, payload: dict[str, Any]
                   ) -> tuple[np.ndarray | None, EncryptedVector | None, str]:
        """Under HE: call r−1's decrypted mean (None at call 1), its encrypted sum, the transcript."""
        assert self.secret is not None
        if call == 1:
            assert payload["weights"] is None
            return None, None, ""
        if not self.kits:
            summed = EncryptedVector.from_dict(payload["weights"])
            return self.secret.decrypt_mean(summed), summed, ""
        from domains.runtime import parts
        from privacy.secagg import aggregate_round, decrypt_round
        from privacy.secagg_messages import MaskRecovery

        kit = self.kits[name]
        shown = [parts.join(*_split(p)) for p in payload["parts"]]
        own = self.own.get((name, call - 1))
        verified = aggregate_round(self.secret, kit.roster, shown, job_id=self.spec.job_id, call=call - 1,
                                   recoveries=[MaskRecovery.from_dict(r) for r in payload["recoveries"]],
                                   min_sites=self.spec.min_contributions,
                                   basis=own.basis if own else None, site=name if own else None)
        return decrypt_round(self.secret, verified), verified.vector, verified.transcript

    def _send(self, name: str, call: int, trained: Weights, payload: dict[str, Any], transcript: str) -> Any:
        vector = flatten(trained)[0]
        if self.secret is None:
            return vector
        if not self.kits:
            return self.secret.encrypt_weighted(vector, weight=payload["weight"], bound=4.0).to_dict()
        from domains.runtime import parts
        from privacy.secagg import make_part

        part = make_part(self.kits[name], self.secret, vector, weight=payload["weight"], bound=4.0,
                         job_id=self.spec.job_id, call=call, round_sites=payload["round_sites"],
                         basis=transcript)
        with self.lock:
            self.own[(name, call)] = part
        header, ciphertext = parts.split(part)
        return {"__part__": header, **ciphertext}

    def _recover(self, name: str, payload: dict[str, Any]) -> CallOutcome:
        from privacy.secagg import recover_masks

        with self.lock:
            self.asked.append(("recover", name))
        if (why := self.fail.get((-payload["recover"], name))) is not None:
            return CallOutcome(name, why, error=f"{name} {why} at recovery")
        recovery = recover_masks(self.kits[name], self.own[(name, payload["recover"])],
                                 survivors=payload["survivors"], min_sites=self.spec.min_contributions)
        return CallOutcome(name, "ok", result={"recovery": recovery.to_dict()})


def _split(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    vector = dict(record["vector"])
    return {k: v for k, v in record.items() if k != "vector"}, vector


class RosterSites(FakeSites):
    """Roster sites return the part's header beside its ciphertext, as the real runtime does."""

    def _one(self, name: str, payload: dict[str, Any]) -> CallOutcome:
        outcome = super()._one(name, payload)
        weights = outcome.result.get("weights")
        if isinstance(weights, dict) and "__part__" in weights:
            outcome.result["part"] = weights.pop("__part__")
        return outcome
