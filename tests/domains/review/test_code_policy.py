"""The site policy recognises medsyft's own code by what would run, never by its name.

Runs a real in-process PySyft server (``sy.orchestra.launch`` without a port): the scientist
submits through PySyft's client, and the policy reads the ``UserCode`` objects PySyft stored,
including the ``parsed_code`` the server derived. Nothing is mocked.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from domains.review.code_policy import classify
from domains.runtime.templates import job_source, release_source
from domains.site.quiet import quiet


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    import syft as sy

    with quiet():
        server = sy.orchestra.launch(name="policy-test", reset=True)
        admin = server.login(email="info@openmined.org", password="changethis")
        labels = np.zeros(4, dtype=np.int64)
        admin.upload_dataset(sy.Dataset(name="xr", asset_list=[sy.Asset(name="labels", data=labels,
                                                                          mock=labels)]))
        admin.register(name="ds", email="ds@lab.example", password="pw-123456", password_verify="pw-123456")
    yield server
    with quiet():
        server.land()


_COUNTER = iter(range(10**6))


def _submit(server: Any, tmp: Path, source: str, function: str, constants: dict[str, Any]) -> Any:
    """Play the scientist: submit *source* as written, return the UserCode PySyft stored."""
    with quiet():
        scientist = server.login(email="ds@lab.example", password="pw-123456")
        path = tmp / f"{function}.py"
        path.write_text(source)
        spec = importlib.util.spec_from_file_location(f"{function}_{next(_COUNTER)}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        module.client = scientist  # type: ignore[attr-defined]
        module.labels_asset = scientist.datasets["xr"].assets["labels"]  # type: ignore[attr-defined]
        for name, value in constants.items():
            setattr(module, name, value)
        spec.loader.exec_module(module)
        request = scientist.code.request_code_execution(getattr(module, function))
        admin = server.login(email="info@openmined.org", password="changethis")
        return next(r.code for r in admin.requests if str(r.id) == str(request.id))


def _job(job_id: str, rounds: int = 3) -> dict[str, Any]:
    return {"job_id": job_id, "rounds": rounds, "dataset": "xr"}


def test_medsyft_job_and_release_are_recognised(server: Any, tmp_path: Path) -> None:
    job = _submit(server, tmp_path, job_source(job_id="a00000000001", limit=4), "medsyft_job_a00000000001",
                  {"job_spec": _job("a00000000001")})
    release = _submit(server, tmp_path, release_source(job_id="a00000000001"),
                      "medsyft_release_a00000000001", {"release_spec": {"job": _job("a00000000001")}})
    assert (classify(job).kind, classify(job).reasons) == ("job", [])
    assert classify(job).constant == _job("a00000000001")
    assert (classify(release).kind, classify(release).reasons) == ("release", [])


def test_reformatting_does_not_matter(server: Any, tmp_path: Path) -> None:
    source = job_source(job_id="a00000000002", limit=4).replace(
        "    return run_job(labels, job, payload)",
        "    # a comment\n    return run_job(labels,job,payload)")
    code = _submit(server, tmp_path, source, "medsyft_job_a00000000002", {"job_spec": _job("a00000000002")})
    assert classify(code).kind == "job"


@pytest.mark.parametrize(("case", "edit", "reason"), [
    ("extra statement", lambda s: s.replace("    return run_job", "    import os\n    os.listdir('/')\n"
                                            "    return run_job"), "source differs"),
    ("other docstring", lambda s: s.replace("Evaluate the incoming", "Evaluate THE incoming"),
     "source differs"),
    ("other runtime", lambda s: s.replace("from domains.runtime.entry import run_job",
                                          "from domains.runtime.final_model import run_release as run_job"),
     "source differs"),
    ("more calls", lambda s: s.replace("limit=4", "limit=40"), "allows 40 calls"),
    ("payload fixed type", lambda s: s.replace("payload=dict", "payload=list"), "scientist-owned dict"),
    ("job not a constant", lambda s: s.replace("job=sy.Constant(val=job_spec)", "job=dict"),
     "not a constant"),
    ("extra input", lambda s: s.replace("payload=dict\n", "payload=dict, extra=dict\n").replace(
        "(labels, job, payload):", "(labels, job, payload, extra):"), "inputs are"),
])
def test_anything_else_is_custom_code(server: Any, tmp_path: Path, case: str, edit: Any, reason: str) -> None:
    job_id = f"b{abs(hash(case)) % 10**11:011d}"
    source = edit(job_source(job_id=job_id, limit=4))
    code = _submit(server, tmp_path, source, f"medsyft_job_{job_id}", {"job_spec": _job(job_id)})
    verdict = classify(code)
    assert verdict.kind == "custom" and reason in " ".join(verdict.reasons), verdict.reasons


def test_a_constant_for_another_job_or_a_foreign_name_is_custom(server: Any, tmp_path: Path) -> None:
    other = _submit(server, tmp_path, job_source(job_id="c00000000001", limit=4), "medsyft_job_c00000000001",
                    {"job_spec": _job("c00000000002")})
    assert "not for job c00000000001" in classify(other).reasons[0]
    renamed = job_source(job_id="c00000000003", limit=4).replace("medsyft_job_c00000000003", "train_it")
    code = _submit(server, tmp_path, renamed, "train_it", {"job_spec": _job("c00000000003")})
    assert classify(code).kind == "custom" and "not named as a medsyft" in classify(code).reasons[0]


def test_the_hash_names_what_would_run(server: Any, tmp_path: Path) -> None:
    code = _submit(server, tmp_path, job_source(job_id="d00000000001", limit=4), "medsyft_job_d00000000001",
                   {"job_spec": _job("d00000000001")})
    other = code.model_copy(deep=True)
    rules = next(iter(other.input_policy_init_kwargs.values()))
    rules["job"].val = _job("d00000000001") | {"dataset": "other"}
    assert classify(code).code_hash != classify(other).code_hash  # another constant is other code to run


def _evaluation(server: Any, tmp: Path, eval_id: str, constant: dict[str, Any],
                edit: Any = lambda s: s) -> Any:
    from domains.runtime.templates import evaluate_source

    return _submit(server, tmp, edit(evaluate_source(eval_id=eval_id)), f"medsyft_evaluate_{eval_id}",
                   {"eval_spec": constant})


def test_a_cross_site_evaluation_is_recognised_and_its_variants_are_custom(server: Any,
                                                                           tmp_path: Path) -> None:
    constant = {"eval_id": "e00000000001", "job": _job("a00000000009"), "dataset": "xr"}
    code = classify(_evaluation(server, tmp_path, "e00000000001", constant))
    assert (code.kind, code.reasons, code.constant) == ("evaluate", [], constant)
    other = classify(_evaluation(server, tmp_path, "e00000000002", {**constant, "eval_id": "e00000000003"}))
    assert "not for evaluation e00000000002" in other.reasons[0]
    more = classify(_evaluation(server, tmp_path, "e00000000004", {**constant, "eval_id": "e00000000004"},
                                lambda s: s.replace("limit=1", "limit=2")))
    assert more.kind == "custom" and "allows 2 calls" in more.reasons[0]
    swapped = classify(_evaluation(server, tmp_path, "e00000000005", {**constant, "eval_id": "e00000000005"},
                                   lambda s: s.replace("import run_evaluation",
                                                       "import run_job as run_evaluation")))
    assert swapped.kind == "custom" and "source differs" in swapped.reasons[0]
