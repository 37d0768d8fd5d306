"""FedProx end to end on two real datasite processes: μ travels in the approved job constant,
the owners' review shows it, the site policy still knows the job as medsyft's, and the run
finishes, in plaintext with and without DP. The same skewed federation runs a class-weighted
job too (another job constant that changes the local objective), with augmentation and a cosine
learning-rate schedule. Nothing is mocked."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from support import approve_all, deploy_sites, ledger_calls, run_cli, write_job_toml

from domains.review.privacy import job_constant
from domains.review.requests import RequestBook

pytestmark = pytest.mark.slow

COUNT = 600
NAMES = ("fp1", "fp2")
MU = 0.1


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    os.environ["MEDSYFT_TORCH_THREADS"] = "1"  # two datasites share the machine's cores
    root = tmp_path_factory.mktemp("fedprox")
    sites = deploy_sites(root, NAMES)
    (root / "secrets").mkdir()
    for i, site in enumerate(sites, start=1):  # skewed shards: the case FedProx is made for
        site.publish(name="chest", shard=f"{i}/2", partition="dirichlet:0.5", seed=0, synthetic_count=COUNT)
        (root / "secrets" / f"{site.config.name}.txt").write_text(site.add_scientist("ds@lab.example"))
    yield {"root": root, "sites": sites}
    for site in sites:
        site.stop()


def _new_job(fed: dict[str, Any], run: str, *, dp: bool, **extra: Any) -> Any:
    from orchestrator import FederatedJob, load_config

    settings = {"dataset": "chest", "model": "small-cnn", "rounds": 2, "local_epochs": 1,
                "batch_size": 32, "lr": 0.001, "min_sites": 2, "strategy": "fedprox",
                "proximal_mu": MU, "round_timeout": 120, "approval_timeout": 30, "run_dir": run, **extra}
    lines = ["[job]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines += ["", "[privacy]", f"dp = {json.dumps(dp)}", "he = false"]
    return FederatedJob(load_config(write_job_toml(fed["root"], run, fed["sites"], lines)))


def _request_id(site: Any, function: str) -> str:
    table = RequestBook(site.data_dir).table()
    return str(table.loc[table["function"] == function, "id"].iloc[0])


@pytest.mark.parametrize("dp", [False, True], ids=["plain", "dp"])
def test_fedprox_job_runs_with_mu_in_the_approved_constant(federation: dict[str, Any], dp: bool) -> None:
    job = _new_job(federation, f"fedprox-{'dp' if dp else 'plain'}", dp=dp)
    job.submit()
    spec = job.state().spec
    assert spec.train.proximal_mu == MU
    planned = {}
    for site in federation["sites"]:
        request = _request_id(site, spec.function_name)
        review = RequestBook(site.data_dir).review(request)
        assert review.verdict is not None and review.verdict.kind == "job", review.verdict
        planned[site.config.name] = review.privacy.numbers.get("job_epsilon") if review.privacy else None
        shown = run_cli("domain", "review", request, "--data-dir", str(site.data_dir.path))
        assert shown.code == 0 and f"FedProx proximal term μ = {MU:g}" in shown.out, shown.out
    approve_all(federation["sites"])
    job.wait_for_approval(timeout=30)
    for site in federation["sites"]:  # what each datasite approved, read back from its own store
        approved = RequestBook(site.data_dir).find(_request_id(site, spec.function_name))
        constant = job_constant(approved.code)
        assert constant is not None and constant["train"]["proximal_mu"] == MU
    result = job.run(progress=False)
    assert job.state().finished
    assert (result.history["status"] == "ok").all() and len(result.history) == 2 * len(NAMES)
    for name in NAMES:
        assert ledger_calls(federation["root"], name, spec.job_id) == [1, 2, 3]
    if dp:  # Opacus counted what the ledger charged at every call, and the job spent what review said
        spent = result.epsilon()["job_epsilon_spent"]
        assert set(spent.index) == set(NAMES)
        for name in NAMES:
            assert planned[name] is not None and spent[name] > 0
            assert spent[name] == pytest.approx(planned[name])


def test_a_class_weighted_job_takes_its_weights_from_the_published_counts(federation: dict[str, Any]) -> None:
    from domains.shared.spec import balanced_weights, logit_offsets

    job = _new_job(federation, "balanced-dp", dp=True, class_weights="balanced",  # with FedProx, too
                   loss="logit-adjusted", logit_tau=2.0, augment="affine", lr_schedule="cosine")
    counts = [sum(site.metadata("chest")["class_counts"][name] for site in job.sites)
              for name in ("normal", "pneumonia")]
    job.submit()
    spec = job.state().spec
    assert spec.train.class_weights == balanced_weights(counts)  # the union of the shards is balanced here
    assert spec.train.logit_adjustment == logit_offsets(counts, tau=2.0)
    assert (spec.train.augment, spec.train.lr_schedule) == ("affine", "cosine")
    for site in federation["sites"]:
        request = _request_id(site, spec.function_name)
        shown = run_cli("domain", "review", request, "--data-dir", str(site.data_dir.path))
        assert shown.code == 0 and "class-weighted loss (" in shown.out, shown.out
        assert "logit-adjusted loss (offsets " in shown.out, shown.out
        assert "augmentation: every training image is warped" in shown.out, shown.out
        assert "cosine learning-rate schedule: 0.001 in round 1 down to 0.0005 in round 2" in shown.out
    approve_all(federation["sites"])
    job.wait_for_approval(timeout=30)
    result = job.run(progress=False)  # DP-SGD with the weighted loss, under the site's own Opacus
    assert (result.history["status"] == "ok").all() and len(result.history) == 2 * len(NAMES)
    rates = result.history.groupby("round")["train_lr"].unique()  # what each site trained at
    assert [list(rates[r]) for r in (1, 2)] == [[0.001], [0.0005]], rates
    assert (result.epsilon()["job_epsilon_spent"] > 0).all()
