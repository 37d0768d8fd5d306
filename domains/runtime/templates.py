"""The only code a medsyft datasite approves by default: a job call, a model release and a
cross-site evaluation.

The orchestrator writes these templates into the run directory (PySyft reads a function's
source file) and submits them; the datasite's site policy (:mod:`domains.review.code_policy`)
recognises them by their exact normalised source and input bindings, never by their name.
They live here, in the room both sides import, so that what is submitted and what is
recognised cannot drift apart. Everything that matters is in the installed runtime and the
approved constant; the function bodies only hand their inputs over.
"""

from __future__ import annotations

JOB_PREFIX = "medsyft_job_"
RELEASE_PREFIX = "medsyft_release_"
EVALUATE_PREFIX = "medsyft_evaluate_"

JOB_TEMPLATE = '''"""medsyft federated job {job_id}: submitted to every datasite of the federation."""
import syft as sy
from syft.service.policy.policy import OutputPolicyExecuteCount


@sy.syft_function(
    input_policy=sy.MixedInputPolicy(
        client=client, labels=labels_asset, job=sy.Constant(val=job_spec), payload=dict
    ),
    output_policy=OutputPolicyExecuteCount(limit={limit}),
)
def {function}(labels, job, payload):
    """Evaluate the incoming global model on this site's validation split, then train it
    on the training split with the approved job constants; return its weights and
    aggregate metrics. The logic is the datasite's installed medsyft runtime."""
    from domains.runtime.entry import run_job

    return run_job(labels, job, payload)
'''

RELEASE_TEMPLATE = '''"""medsyft release of job {job_id}'s final model: this site's masked share."""
import syft as sy
from syft.service.policy.policy import OutputPolicyExecuteCount


@sy.syft_function(
    input_policy=sy.MixedInputPolicy(
        client=client, labels=labels_asset, release=sy.Constant(val=release_spec), payload=dict
    ),
    output_policy=OutputPolicyExecuteCount(limit=1),
)
def {function}(labels, release, payload):
    """Decrypt the job's final model (only if it is the one this site evaluated last) and
    return it masked by this site's share: the model is readable only once EVERY site of
    the job's approved roster approved its own release request."""
    from domains.runtime.entry import run_release

    return run_release(labels, release, payload)
'''


EVALUATE_TEMPLATE = '''"""medsyft cross-site evaluation {eval_id}: a final model scored on test data."""
import syft as sy
from syft.service.policy.policy import OutputPolicyExecuteCount


@sy.syft_function(
    input_policy=sy.MixedInputPolicy(
        client=client, labels=labels_asset, evaluation=sy.Constant(val=eval_spec), payload=dict
    ),
    output_policy=OutputPolicyExecuteCount(limit=1),
)
def {function}(labels, evaluation, payload):
    """Score the approved job's final model once on this site's test dataset, the one the
    labels asset belongs to, and return only counts with Gaussian noise, charged to that
    dataset's privacy budget. The logic is the datasite's installed medsyft runtime."""
    from domains.runtime.entry import run_evaluation

    return run_evaluation(labels, evaluation, payload)
'''


def job_source(*, job_id: str, limit: int) -> str:
    """The job template as submitted for *job_id* with *limit* approved calls."""
    return JOB_TEMPLATE.format(job_id=job_id, function=f"{JOB_PREFIX}{job_id}", limit=limit)


def release_source(*, job_id: str) -> str:
    """The release template as submitted for *job_id*."""
    return RELEASE_TEMPLATE.format(job_id=job_id, function=f"{RELEASE_PREFIX}{job_id}")


def release_function_name(job_id: str) -> str:
    return f"{RELEASE_PREFIX}{job_id}"


def evaluate_source(*, eval_id: str) -> str:
    """The evaluation template as submitted for *eval_id*."""
    return EVALUATE_TEMPLATE.format(eval_id=eval_id, function=evaluate_function_name(eval_id))


def evaluate_function_name(eval_id: str) -> str:
    return f"{EVALUATE_PREFIX}{eval_id}"
