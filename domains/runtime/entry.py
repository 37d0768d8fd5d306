"""What approved medsyft code does inside a datasite process.

The code a scientist submits is three lines that call :func:`run_job`; the
training logic is this installed, reviewed package, and every hyperparameter
is in the approved :class:`~domains.shared.spec.JobSpec` constant. The
function is bound to the dataset's ``labels`` asset: the runtime checks that
those labels are the ones in its training store before touching the images.

Errors: PySyft shows the scientist only "contact the admin" for an exception,
so expected failures come back as ``{"error": {"type", "message"}}`` with a
message written for the scientist; anything unexpected returns only its type,
and its traceback goes to the datasite log. Once a call has touched private
data, every failure (a loss that became NaN, say) reaches the scientist as one
fixed message with a random reference; the reason goes to the datasite's log only,
because a message that depends on the data would leak it.

The global model arrives, and the update leaves, in the wire form of :mod:`domains.shared.codec`:
without HE a plaintext model with its layout, which is checked against the approved model before
any private data is read (the bare float32 vector of an orchestrator of the previous version is
still taken, and answered in kind).

Under a job with a roster (``he.roster``) the global model is the verified sum of the previous
call's signed parts and the update leaves as this site's own signed part
(:mod:`domains.runtime.secure_round`); a refusal names its rule and site, before anything is
decrypted or any private data is read, and the call log records it as ``refused``. Under HE with
a server optimizer (``spec.server``) the global model is this site's own step from the decrypted
mean (:mod:`domains.runtime.site_global`), and every result carries its state's public hash.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from domains import budget
from domains.data import store
from domains.errors import MedsyftDomainError
from domains.runtime import cross_eval, final_model
from domains.runtime.call_log import CallLog
from domains.runtime.errors import PrivateComputationFailed, TrainingError
from domains.runtime.local import train_local
from domains.runtime.plan import JobPlan, job_plan, site_split
from domains.runtime.secure_round import SecureRound, recover
from domains.runtime.site_global import step_global
from domains.runtime.split import val_count
from domains.runtime.tasks import Task, task_for
from domains.runtime.threads import configure_threads
from domains.runtime.weights import flatten, get_weights, layout_of, load_plain
from domains.shared import codec
from domains.shared.counts import wire_form
from domains.shared.eval_spec import EvalSpec
from domains.shared.plain_model import MODEL_FORMAT, PlainModel
from domains.shared.spec import JobSpec
from domains.site import he_key
from domains.site.datadir import DataDir
from privacy.accounting import compact
from privacy.errors import AggregationRefused, PrivacyError

ALLOWED_ERRORS = (TrainingError, MedsyftDomainError, PrivacyError)


@dataclass
class _SiteData:
    images: np.ndarray
    labels: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray


_CACHE: dict[tuple[str, str, float, int, bool], _SiteData] = {}


def _site_data(data_dir: DataDir, spec: JobSpec, bound_labels: np.ndarray) -> _SiteData:
    """The dataset and its split, loaded once per datasite process."""
    key = (str(data_dir.path), spec.dataset, spec.val_fraction, spec.split_seed, spec.dp is not None)
    if key not in _CACHE:
        stored = store.load(data_dir, spec.dataset)
        train_idx, val_idx = site_split(spec, stored.images, stored.labels)
        _CACHE[key] = _SiteData(stored.images, stored.labels, train_idx, val_idx)
    data = _CACHE[key]
    if not np.array_equal(np.asarray(bound_labels), data.labels):
        raise TrainingError(
            f"the approved labels asset does not match dataset '{spec.dataset}' on this datasite"
        )
    return data


def _incoming(spec: JobSpec, call: int, payload: dict[str, Any], model: Any, data_dir: DataDir,
              secure: SecureRound | None) -> str | None:
    """Load the global model the orchestrator sent (decrypting it under HE) into *model*.

    Under a server optimizer the global model is this site's own step from the decrypted mean
    (:mod:`domains.runtime.site_global`); the public hash of its state is returned.
    """
    if spec.he is None:
        _plain_incoming(call, payload["weights"], model)
        return None
    mean, summed, transcript = _decrypted(spec, call, payload, data_dir, secure)
    vector, state_hash = mean, None
    if spec.server is not None:
        vector, state_hash = step_global(data_dir, spec, call, mean, initial=flatten(get_weights(model))[0])
    if vector is not None:
        received = PlainModel(vector, layout_of(model))  # decrypted here: the approved model's layout
        load_plain(model, received)
        if call == spec.max_calls and summed is not None:
            # the final model: kept here for local use after its release, with what it came from
            final_model.keep_final(data_dir, spec, summed, received, transcript=transcript,
                             state_hash=state_hash or "")
    return state_hash


def _plain_incoming(call: int, sent: Any, model: Any) -> None:
    """Load the plaintext global model; its layout is checked against the approved model here,
    before any private data is read. A bare float32 vector is what an orchestrator of the previous
    version sends (hospitals upgrade separately): it takes the approved model's layout."""
    if sent is None:
        if call == 1:
            return  # round 1 starts from the registry's seeded initial model, built on this site
        raise TrainingError("payload['weights'] must be the global model (its medsyft-model/1 form)")
    received = codec.from_wire(sent, layout=layout_of(model))
    if not isinstance(received, PlainModel):
        raise TrainingError(f"this job trains in plaintext: payload['weights'] must be a plaintext model, "
                            f"not a {type(received).__name__}")
    load_plain(model, received)


def _decrypted(spec: JobSpec, call: int, payload: dict[str, Any], data_dir: DataDir,
               secure: SecureRound | None) -> tuple[np.ndarray | None, Any, str]:
    """The previous call's decrypted mean (None at call 1), the encrypted sum it came from and,
    under a roster, the transcript of the signed parts it verified."""
    assert spec.he is not None
    if secure is not None:  # a roster job: the model is the verified sum of the signed parts
        mean = secure.global_model()  # refuses, before decrypting, anything the parts do not prove
        verified = secure.verified
        return mean, verified.vector if verified else None, verified.transcript if verified else ""
    sent = payload["weights"]
    if sent is None and call == 1:
        return None, None, ""  # round 1 starts from the registry's seeded initial model
    from privacy.he import EncryptedVector

    context = he_key.load(data_dir, expect=spec.he.key_id)
    encrypted = codec.from_wire(sent) if isinstance(sent, dict) else None
    if not isinstance(encrypted, EncryptedVector):
        raise TrainingError("this job aggregates under HE: the global model must arrive encrypted")
    if encrypted.key_id == context.key_id and encrypted.n_parts < spec.min_contributions:
        raise TrainingError(f"the global model sums {encrypted.n_parts} site update(s), fewer than "
                            f"the {spec.min_contributions} this job was approved with")
    return context.decrypt_mean(encrypted), encrypted, ""  # refuses another federation's key first


def _outgoing(spec: JobSpec, payload: dict[str, Any], model: Any, data_dir: DataDir,
              secure: SecureRound | None) -> dict[str, Any]:
    """The trained model as it leaves the site: encrypted and pre-weighted under HE (masked and
    signed under a roster)."""
    trained = PlainModel.from_weights(get_weights(model))
    if spec.he is None:
        return {"weights": trained}  # the call log returns it in its wire form
    vector = trained.vector
    weight = _share(payload)
    if secure is not None:
        return secure.sign(vector, weight=weight)
    context = he_key.load(data_dir, expect=spec.he.key_id)
    bound = spec.he.weight_bound
    encrypted = context.encrypt_weighted(vector, weight=weight, bound=bound)
    return {"weights": encrypted, "clamped": int(np.count_nonzero(np.abs(vector) > bound))}


def _share(payload: dict[str, Any]) -> float:
    weight = payload.get("weight")
    if not isinstance(weight, int | float) or not 0.0 < float(weight) <= 1.0:
        raise TrainingError(f"payload['weight'] must be this site's FedAvg share in (0, 1] (got {weight!r})")
    return float(weight)


def _public_n_train(spec: JobSpec, data: _SiteData) -> int:
    """The FedAvg weight: under DP the expected training size, a function of the public size only."""
    n = len(data.labels)
    if spec.dp is None:
        return len(data.train_idx)
    return n - val_count(n, val_fraction=spec.val_fraction)


def _evaluate(spec: JobSpec, task: Task, model: Any, data: _SiteData) -> dict[str, Any]:
    counts = task.evaluate(model, data.images[data.val_idx], data.labels[data.val_idx])
    if spec.dp is not None:
        counts = task.add_noise(counts, eval_noise_multiplier=spec.dp.eval_noise_multiplier)
    return counts.to_dict()


def _compute(spec: JobSpec, call: int, data: _SiteData, payload: dict[str, Any], data_dir: DataDir
             ) -> dict[str, Any]:
    configure_threads()
    site = check_roster(spec, data_dir)
    secure = None
    if spec.he is not None:  # a job for another federation's key is refused before any work
        he_key.load(data_dir, expect=spec.he.key_id)
        if call <= spec.rounds:
            _share(payload)
        if spec.he.roster:  # and one for another roster, or a bad site set
            secure = SecureRound.open(spec, call, payload, data_dir, site=site)
    task = task_for(spec)
    model = task.build_model(spec)
    state_hash = _incoming(spec, call, payload, model, data_dir, secure)
    plan = None
    if spec.dp is not None:  # charge before any private image is touched
        plan = job_plan(spec, n_train=len(data.train_idx),
                        delta=budget.status(data_dir, spec.dataset).delta)
        budget.charge(data_dir, spec.dataset, job_id=spec.job_id, call=call,
                      entries=plan.per_call[call])
    try:
        result = _on_private_data(spec, task, call, data, payload, data_dir, model, plan, secure)
    except Exception as exc:
        raise _private_failure(call, exc) from None
    if plan is not None:
        result["privacy"] = _privacy_report(data_dir, spec, plan)
    if state_hash is not None:
        result["global_state_hash"] = state_hash
    return result


def _on_private_data(spec: JobSpec, task: Task, call: int, data: _SiteData, payload: dict[str, Any],
                     data_dir: DataDir, model: Any, plan: JobPlan | None,
                     secure: SecureRound | None) -> dict[str, Any]:
    """Evaluate, then train: everything here reads private images (and is charged already)."""
    t0 = time.perf_counter()
    # only the approved calls evaluate (spec.eval_every): the others release no counts and are charged none
    counts = _evaluate(spec, task, model, data) if spec.evaluates(call) else None
    result: dict[str, Any] = {"step": "evaluate", "call": call, "eval": counts,
                              "eval_seconds": time.perf_counter() - t0,
                              "n_train": _public_n_train(spec, data), "weights": None}
    if call <= spec.rounds:
        config = spec.train.for_round(call, spec.rounds)  # a new shuffle each round, the scheduled lr
        dp = spec.dp_training(plan.noise_multiplier) if plan and plan.noise_multiplier else None
        # the memory-mapped store and the split: batches are gathered one at a time
        local = train_local(model, data.images, data.labels, indices=data.train_idx,
                            config=config, dp=dp, task=task)
        # a training call's plan ends with its training entry (after its evaluation, if it evaluates)
        if plan is not None and compact(local.privacy_history) != compact(plan.per_call[call][-1:]):
            raise TrainingError(  # a bug, never expected: the charge must be what Opacus counted
                f"Opacus recorded {local.privacy_history} but the ledger charged {plan.per_call[call]}")
        result.update(step="train", train_loss=None if dp else local.mean_loss,
                      train_seconds=local.seconds, steps=local.steps, train_lr=config.lr,
                      opacus_history=local.privacy_history,
                      **_outgoing(spec, payload, model, data_dir, secure))
    return result


def _private_failure(call: int, exc: BaseException) -> PrivateComputationFailed:
    """The one message a scientist gets for any failure on private data; the log has the reason."""
    reference = secrets.token_hex(4)
    print(f"medsyft: call {call} failed on private data (reference {reference}):", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    return PrivateComputationFailed(
        f"call {call} failed while computing on private data; the data owner can find the reason "
        f"in the datasite's log under reference {reference}")


def check_roster(spec: JobSpec, data_dir: DataDir) -> str:
    """This datasite's name, once it is sure the approved job's roster names it."""
    name = data_dir.read_config().name
    if not spec.sites:
        raise TrainingError(f"job {spec.job_id} names no roster of sites; it was made before rosters "
                            "existed: submit it again")
    if name not in spec.sites:
        raise TrainingError(f"this datasite ('{name}') is not in job {spec.job_id}'s approved roster "
                            f"({', '.join(spec.sites)})")
    return name


def _privacy_report(data_dir: DataDir, spec: JobSpec, plan: JobPlan) -> dict[str, Any]:
    """ε numbers the scientist may see: the job's and the dataset's, never anything per image."""
    status = budget.status(data_dir, spec.dataset)
    job = next((j for j in status.jobs if j.job_id == spec.job_id), None)
    return {"noise_multiplier": plan.noise_multiplier, "delta": status.delta,
            "job_epsilon_spent": job.spent_epsilon if job else 0.0,
            "job_epsilon_planned": job.epsilon if job else None,
            "dataset_epsilon_spent": status.spent_epsilon,
            "dataset_epsilon_budget": status.epsilon_budget,
            "dataset_epsilon_remaining": status.remaining_epsilon}


def run_job(labels: Any, job: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point of approved code: one call of one job on this datasite."""
    started = time.perf_counter()

    def call_once() -> dict[str, Any]:
        spec = JobSpec.from_dict(job)
        if isinstance(payload, dict) and "recover" in payload:  # no private data, no call number
            data_dir = DataDir(os.environ["MEDSYFT_DATA_DIR"])
            return recover(spec, payload, data_dir, site=check_roster(spec, data_dir))
        if not isinstance(payload, dict) or not {"call", "weights"} <= set(payload):
            raise TrainingError("payload must be a dict with 'call' and 'weights'")
        call = int(payload["call"])
        data_dir = DataDir(os.environ["MEDSYFT_DATA_DIR"])
        data = _site_data(data_dir, spec, labels)
        calls = CallLog(data_dir.jobs_dir, spec.job_id, spec.max_calls)
        result = calls.run(call, lambda: _compute(spec, call, data, payload, data_dir),
                            skipped=_skipped(payload, call))
        result["site_seconds"] = time.perf_counter() - started
        return _wire_counts(_in_kind(payload, result))

    return _guarded(call_once)


def run_release(labels: Any, release: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point of an approved release request (see :mod:`domains.runtime.final_model`)."""
    def release_once() -> dict[str, Any]:
        spec = JobSpec.from_dict(release["job"])
        data_dir = DataDir(os.environ["MEDSYFT_DATA_DIR"])
        _site_data(data_dir, spec, labels)  # the release is bound to the same dataset
        calls = CallLog(data_dir.jobs_dir, f"{spec.job_id}-release", 1, retry_failed=True)
        return calls.run(1, lambda: final_model.run_release(release, payload))

    return _guarded(release_once)


def run_evaluation(labels: Any, evaluation: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Entry point of an approved cross-site evaluation (see :mod:`domains.runtime.cross_eval`)."""
    def evaluate_once() -> dict[str, Any]:
        ev = EvalSpec.from_dict(evaluation)
        data_dir = DataDir(os.environ["MEDSYFT_DATA_DIR"])
        calls = CallLog(data_dir.jobs_dir, f"{ev.eval_id}-evaluate", 1)

        def compute() -> dict[str, Any]:
            model, stored = cross_eval.prepare(data_dir, ev, labels, payload)  # checks, then the charge
            try:
                result = cross_eval.release(ev, model, stored)
            except Exception as exc:
                raise _private_failure(1, exc) from None
            return {**result, "dataset": ev.dataset, "model": ev.model, "job_id": ev.job.job_id,
                    "privacy": cross_eval.privacy_report(data_dir, ev), "weights": None}

        return _wire_counts(calls.run(1, compute))

    return _guarded(evaluate_once)


def _wire_counts(result: dict[str, Any]) -> dict[str, Any]:
    """The result with its metric counts in their wire form (:func:`domains.shared.counts.wire_form`):
    PySyft serializes the score histograms as one array, not 800 numbers one by one."""
    if isinstance(result.get("eval"), dict):
        return {**result, "eval": wire_form(result["eval"])}
    return result


def _in_kind(payload: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """The result in the form the orchestrator sent: one of the previous version sends and reads a
    bare float32 vector, so it gets the plaintext model's vector alone."""
    back = result.get("weights")
    if isinstance(payload.get("weights"), np.ndarray) and isinstance(back, dict) \
            and back.get("format") == MODEL_FORMAT:
        return {**result, "weights": back["vector"]}
    return result


def _skipped(payload: dict[str, Any], call: int) -> list[int]:
    """The earlier calls the orchestrator gave up for this site (it was not asked, or failed)."""
    skipped = payload.get("skipped", [])
    if not isinstance(skipped, list | tuple) or not all(isinstance(c, int) and 1 <= c < call
                                                       for c in skipped):
        raise TrainingError(f"payload['skipped'] must list earlier call numbers (1..{call - 1})")
    return list(skipped)


def _guarded(task: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Expected errors as a message for the scientist; unexpected ones only by type (log has it)."""
    try:
        return task()
    except AggregationRefused as exc:  # the rule and the part's site, for the scientist and the log
        return {"error": {"type": type(exc).__name__, "message": f"{exc} [rule {exc.rule}, site {exc.site}]",
                          "rule": exc.rule, "site": exc.site}}
    except ALLOWED_ERRORS as exc:
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        return {"error": {"type": type(exc).__name__,
                          "message": "unexpected error inside the datasite; its log has the details"}}
