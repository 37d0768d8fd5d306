"""The final model of an encrypted job: kept by every hospital, released only with every owner's yes.

At the job's last call (the final evaluation) each datasite decrypts the final global
model, evaluates it, and keeps it in ``DIR/jobs/JOB/final-model.npz`` (0600) together
with a digest of the ciphertext it decrypted. The scientist holds only that ciphertext (under a
roster job: the last call's signed parts, whose verified sum is that ciphertext).

A *release* is a separate code request per datasite, reviewed like any other. Its
approved code (:func:`run_release`) checks that the ciphertext it is handed is the one
this site evaluated at the final call, and returns the plaintext masked by this site's
share of a zero-sum mask derived from the hospitals' secret (``privacy.he``): only the
sum of every site's share unmasks the model, so one approving hospital cannot release it
alone. After its own approval a hospital may use the model locally (:func:`released_model`).

Under a server optimizer (``spec.server``) the final model is not the final sum but x_R, the
step every site took from it (:mod:`domains.runtime.site_global`); ``final.json`` also keeps
the public hash of that state. The release still checks the final sum, checks the hash too (the
payload's, the record's and the state file's must agree), and masks x_R quantized as a sum of
weight 1 would be: every site holds the same x_R, so the shares unmask to it.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from domains import budget
from domains.runtime.errors import TrainingError
from domains.shared.plain_model import PlainModel, layout_to_json
from domains.shared.spec import JobSpec
from domains.site import he_key
from domains.site.datadir import DataDir
from privacy.durable import atomic_write, atomic_writer
from privacy.durable import utc_stamp as _now

if TYPE_CHECKING:
    from privacy.he import EncryptedVector

FINAL_MODEL = "final-model.npz"
FINAL_RECORD = "final.json"
RELEASED = "released.json"


def keep_final(data_dir: DataDir, spec: JobSpec, encrypted: EncryptedVector, model: PlainModel | np.ndarray,
               *, transcript: str = "", state_hash: str = "") -> None:
    """At the final call: keep the decrypted model and the digest of what it was decrypted from.

    Under a roster job *encrypted* is the verified sum of the last call's signed parts and
    *transcript* names the parts it added, so the release checks the sum every site verified.
    Under a server optimizer *model* is the site's final global model and *state_hash* its
    state's public hash. The vector goes to ``final-model.npz``, the layout of a
    :class:`PlainModel` to ``final.json`` (the release returns it, so the scientist needs no torch
    model to read the released vector; a bare vector keeps none).
    """
    folder = data_dir.jobs_dir / spec.job_id
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    vector = model.vector if isinstance(model, PlainModel) else np.asarray(model, np.float32)
    with atomic_writer(folder / FINAL_MODEL, mode=0o600) as fh:
        np.save(fh, vector)
    record: dict[str, Any] = {"digest": encrypted.digest(), "time": _now(), "spec": spec.to_dict()}
    if isinstance(model, PlainModel):
        record["layout"] = layout_to_json(model.layout)
    if transcript:
        record["transcript"] = transcript
    if state_hash:
        record["global_state_hash"] = state_hash
    atomic_write(folder / FINAL_RECORD, json.dumps(record, indent=2), mode=0o600)


def run_release(release: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Approved release code: this site's masked share of the final model, plus the record.

    The share is bound to the job this site ran: its index and the number of shares come
    from that job's approved roster, so a release naming fewer sites cannot be made, and the
    ciphertext must be the final model this site decrypted and evaluated.
    """
    from privacy.he import EncryptedVector, release_share

    data_dir = DataDir(os.environ["MEDSYFT_DATA_DIR"])
    spec = JobSpec.from_dict(release["job"])
    folder = data_dir.jobs_dir / spec.job_id
    record = _final_record(data_dir, spec, "release")
    index, n_sites = roster_position(data_dir, spec, release)
    sent = payload.get("final") if isinstance(payload, dict) else None
    encrypted = EncryptedVector.from_dict(sent) if isinstance(sent, dict) else None
    if encrypted is None or encrypted.digest() != record["digest"]:
        raise TrainingError("the ciphertext to release is not the final model this datasite "
                            f"evaluated for job {spec.job_id}; send the run's last global model")
    assert spec.he is not None  # _final_record refuses a job without HE
    context = he_key.load(data_dir, expect=spec.he.key_id)
    if spec.server is None:
        share = release_share(context, encrypted, job_id=spec.job_id, site_index=index, n_sites=n_sites)
        out = {"share": share, "scale": encrypted.scale, "weight_sum": encrypted.weight_sum}
    else:
        out = _stepped_share(data_dir, spec, record, payload, context, index=index, n_sites=n_sites)
    atomic_write(folder / RELEASED, json.dumps({"time": _now(), "site_index": index, "n_sites": n_sites}),
                 mode=0o600)
    if "layout" in record:  # kept since the codec; an older final.json has none
        out["layout"] = record["layout"]
    return {**out, "plain_modulus": int(context.params["plain_modulus"]), "site_index": index,
            "record": _record(data_dir, spec)}


def _stepped_share(data_dir: DataDir, spec: JobSpec, record: dict[str, Any], payload: dict[str, Any],
                   context: Any, *, index: int, n_sites: int) -> dict[str, Any]:
    """This site's masked share of its final global model x_R, once its state hash is the released one."""
    from domains.runtime.site_global import SiteGlobal
    from privacy.he import fixed_point_scale, quantize
    from privacy.he_keys import PLAIN_MODULUS
    from privacy.he_release import masked_residues

    assert spec.he is not None
    kept = record.get("global_state_hash")
    state = SiteGlobal(data_dir, spec).load()
    if not kept or state is None or state.call != spec.max_calls or state.digest(spec.job_id) != kept:
        raise TrainingError(f"this datasite's global state of job {spec.job_id} is not the one it evaluated "
                            "at the final call; it has no final model to release")
    if payload.get("global_state_hash") != kept:
        named = str(payload.get("global_state_hash"))[:12]
        raise TrainingError(f"the release names global state {named} but this datasite's final global state "
                            f"is {kept[:12]}; release the state every site evaluated at the final call")
    bound = spec.he.weight_bound
    residues = quantize(state.model, weight=1.0, bound=bound) % PLAIN_MODULUS
    share = masked_residues(context, residues, job_id=spec.job_id, site_index=index, n_sites=n_sites)
    return {"share": share, "scale": fixed_point_scale(bound=bound), "weight_sum": 1.0,
            "global_state_hash": kept}


def roster_position(data_dir: DataDir, spec: JobSpec, release: dict[str, Any]) -> tuple[int, int]:
    """This site's index in the job's roster and the roster's size; refuses a release that
    says otherwise (the scientist's own numbers are never used)."""
    name = data_dir.read_config().name
    if name not in spec.sites:
        raise TrainingError(f"this datasite ('{name}') is not in job {spec.job_id}'s roster "
                            f"({', '.join(spec.sites) or 'none'}); it has nothing to release")
    index, n_sites = spec.sites.index(name), len(spec.sites)
    claimed = (release.get("site_index"), release.get("n_sites"), list(release.get("sites") or []))
    if claimed != (index, n_sites, list(spec.sites)):
        raise TrainingError(f"the release names sites {claimed[2]} (this one #{claimed[0]}, {claimed[1]} "
                            f"in all) but the approved job's roster is {list(spec.sites)}: every one "
                            "of them must take part")
    return index, n_sites


def _record(data_dir: DataDir, spec: JobSpec) -> dict[str, Any]:
    """What the released artifact says about this site: ε spent on its dataset by the job."""
    out: dict[str, Any] = {"dataset": spec.dataset, "rounds": spec.rounds, "dp": spec.dp is not None}
    if spec.dp is not None:
        status = budget.status(data_dir, spec.dataset)
        job = next((j for j in status.jobs if j.job_id == spec.job_id), None)
        out.update(epsilon=job.spent_epsilon if job else 0.0, delta=status.delta,
                   dataset_epsilon_spent=status.spent_epsilon, epsilon_budget=status.epsilon_budget)
    return out


def _final_record(data_dir: DataDir, spec: JobSpec, what: str) -> dict[str, Any]:
    """``final.json`` of *spec*, once it is exactly the job this site ran (*what* asks: the release
    or the evaluation); TrainingError when there is none or it names another job."""
    folder = data_dir.jobs_dir / spec.job_id
    if spec.he is None or not (folder / FINAL_RECORD).exists():
        raise TrainingError(f"job {spec.job_id} has no encrypted final model on this datasite "
                            "(it did not run here, or not to its final call)")
    record: dict[str, Any] = json.loads((folder / FINAL_RECORD).read_text())
    if JobSpec.from_dict(record["spec"]) != spec:
        raise TrainingError(f"the {what} describes job {spec.job_id} differently from the job this "
                            "datasite ran; it must name the approved job unchanged")
    return record


def kept_model(data_dir: DataDir, spec: JobSpec) -> np.ndarray:
    """The final model this datasite decrypted and evaluated at *spec*'s final call (released or
    not), for a cross-site evaluation; refused unless it kept one for exactly this job."""
    _final_record(data_dir, spec, "evaluation")
    return np.asarray(np.load(data_dir.jobs_dir / spec.job_id / FINAL_MODEL), dtype=np.float32)


def release_approved(data_dir: DataDir, job_id: str) -> bool:
    """Whether this site's owner approved job *job_id*'s release: the release already ran here, or
    the audit log's last decision on a release request of the job is an approval."""
    from domains.runtime.templates import release_function_name
    from domains.site.audit import AuditLog
    from domains.site.datadir import AUDIT_FILE

    if (data_dir.jobs_dir / job_id / RELEASED).exists():
        return True
    function = release_function_name(job_id)
    decisions = [e["event"] for e in AuditLog(data_dir.file(AUDIT_FILE)).entries()
                 if e["event"] in ("approve", "deny") and e["details"].get("function") == function]
    return bool(decisions) and decisions[-1] == "approve"


def released_model(data_dir: DataDir, job_id: str) -> tuple[JobSpec, np.ndarray]:
    """The final model for local inference, once this site's owner approved its release."""
    folder = data_dir.jobs_dir / job_id
    if not (folder / FINAL_RECORD).exists():
        raise TrainingError(f"this datasite kept no final model of job {job_id} (it ran no encrypted job "
                            "of that id to its final call); `medsyft domain requests` lists its jobs")
    if not release_approved(data_dir, job_id):
        raise TrainingError(f"job {job_id}'s final model is not released on this datasite; approve "
                            "its release request first (`medsyft domain requests`)")
    record = json.loads((folder / FINAL_RECORD).read_text())
    return JobSpec.from_dict(record["spec"]), np.load(folder / FINAL_MODEL)

