"""Cross-site evaluation end to end: each hospital's private test split scores the final model.

Two real datasite processes hold a MedMNIST-style source (phantoms written as ``train``/``test``
splits, so the model learns something) and publish both splits, the test one as a separate
dataset with its own ε budget, through the same ``medsyft domain publish --split test`` a
hospital runs. An encrypted DP job trains one round; ``medsyft evaluate`` asks both owners to
score the final model each kept, and only noisy counts come back, charged to the test dataset.
A plaintext job's final model is sent instead. The attacks: a constant that names the training
dataset, code bound to the training labels, a model of another layout. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import approve_all, deploy_sites, run_cli, write_job_toml

from domains.review.requests import RequestBook

pytestmark = pytest.mark.slow

NAMES = ("h1", "h2")
TRAIN, TEST = 800, 400
EVAL_SIGMA, TEST_SIGMA, BINS = 5.0, 2.0, 10


def _phantom_npz(path: Path) -> Path:
    from domains.data.phantom import generate_chest_phantoms

    train = generate_chest_phantoms(TRAIN, image_size=28, seed=0)
    test = generate_chest_phantoms(TEST, image_size=28, seed=99)
    np.savez(path, train_images=train.images[:, 0], train_labels=train.labels.reshape(-1, 1),
             test_images=test.images[:, 0], test_labels=test.labels.reshape(-1, 1))
    return path


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from privacy.he import init_keys

    os.environ["MEDSYFT_TORCH_THREADS"] = "1"
    root = tmp_path_factory.mktemp("crosseval")
    secret, public, _ = init_keys(root / "keys")
    source = _phantom_npz(root / "chest.npz")
    sites = deploy_sites(root, NAMES, he_key=secret)
    (root / "secrets").mkdir()
    for i, site in enumerate(sites, start=1):
        d = str(site.data_dir.path)
        for split, name in (("train", "chest"), ("test", "chest-test")):
            out = run_cli("domain", "publish", "--data-dir", d, "--source", str(source), "--split", split,
                          "--shard", f"{i}/2", "--name", name)
            assert out.code == 0, out.err
        (root / "secrets" / f"{site.config.name}.txt").write_text(site.add_scientist("ds@lab.example"))
    yield {"root": root, "sites": sites, "public": public}
    for site in sites:
        site.stop()


def _job(fed: dict[str, Any], run: str, *, he: bool) -> Any:
    from orchestrator import FederatedJob, load_config

    privacy = (["[privacy]", "noise_multiplier = 1.0", f"eval_noise_multiplier = {EVAL_SIGMA}",
                f'he_public_key = "{fed["public"]}"'] if he else ["[privacy]", "dp = false", "he = false"])
    lines = ["[job]", 'dataset = "chest"', 'model = "small-cnn"', "rounds = 1", "local_epochs = 2",
             "batch_size = 64", "lr = 0.003", "min_sites = 2", "round_timeout = 300", "approval_timeout = 60",
             f'run_dir = "{run}"', "", *privacy, "", "[evaluation]", 'dataset = "chest-test"',
             f"noise_multiplier = {TEST_SIGMA}", f"bins = {BINS}", "", "[baseline]",
             'source = "chest.npz"']
    return FederatedJob(load_config(write_job_toml(fed["root"], run, fed["sites"], lines)))


def _train(fed: dict[str, Any], job: Any) -> Any:
    job.submit()
    approve_all(fed["sites"])
    job.wait_for_approval(timeout=60)
    return job.run(progress=False)


@pytest.fixture(scope="module")
def encrypted(federation: dict[str, Any]) -> dict[str, Any]:
    job = _job(federation, "he-run", he=True)
    result = _train(federation, job)
    assert result.weights is None  # the scientist holds only the encrypted final model
    return {"job": job, "result": result}


def _ledger(site: Any, dataset: str) -> dict[str, Any]:
    return json.loads((site.data_dir.path / "privacy" / f"{dataset}.json").read_text())


def _exact(site: Any, spec: Any, weights: Any = None) -> Any:
    """What the hospital itself computes: the model on its own test split, without noise."""
    from domains.data import store
    from domains.runtime.evaluation import evaluate_model
    from domains.runtime.final_model import kept_model
    from domains.runtime.models import build_model
    from domains.runtime.weights import layout_of, load_plain, set_weights
    from domains.shared.plain_model import PlainModel
    from domains.site.datadir import DataDir

    data_dir = DataDir(site.data_dir.path)
    model = build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                        image_size=spec.image_size, seed=spec.train.seed)
    if weights is not None:
        set_weights(model, weights)
    else:
        load_plain(model, PlainModel(kept_model(data_dir, spec), layout_of(model)))
    stored = store.load(data_dir, "chest-test")
    return evaluate_model(model, stored.images, stored.labels)


def test_evaluate_waits_for_the_owners_then_pools_noisy_test_counts(encrypted: dict[str, Any],
                                                                    federation: dict[str, Any]) -> None:
    from opacus.accountants import RDPAccountant

    from domains.shared.counts import pool

    job, sites = encrypted["job"], federation["sites"]
    config = str(federation["root"] / "he-run.toml")
    waiting = run_cli("evaluate", "--config", config)
    assert waiting.code == 3 and "not yet" in waiting.out and "h1" in waiting.out, waiting.out + waiting.err
    for site in sites:
        book = RequestBook(site.data_dir)
        table = book.table()
        report = book.review(table.loc[table["function"].str.startswith("medsyft_evaluate_"), "id"].iloc[0])
        assert report.verdict is not None and report.verdict.kind == "evaluate"
        text = "\n".join(report.privacy.lines)
        assert "CROSS-SITE EVALUATION" in text and "chest-test" in text and "not released to anyone" in text
        assert not report.privacy.refusals and not report.privacy.warnings
    train_before = {s.config.name: _ledger(s, "chest") for s in sites}
    approve_all(sites)
    done = run_cli("evaluate", "--config", config)
    assert done.code == 0, done.out + done.err
    assert "cross-site test (2 hospitals' private 'chest-test'" in done.out
    result = job.fetch_evaluation()  # asked again: the sites replay their one release
    shown = next(line for line in done.out.splitlines() if line.startswith("cross-site test"))
    assert shown == result.line()

    exact = {s.config.name: _exact(s, encrypted["result"].spec) for s in sites}
    pooled_exact, pooled = pool(list(exact.values())), result.pooled
    table = result.table().set_index("site")
    acc_sd = table.loc["pooled", "± (noise sd)"]
    assert 0 < acc_sd < 0.05 and abs(pooled.accuracy - pooled_exact.accuracy) < 6 * acc_sd
    assert abs(pooled.n - pooled_exact.n) < 6 * TEST_SIGMA * 3 ** 0.5 * 2
    assert pooled.score_histograms.shape == (2, 2, BINS)
    for name, counts in result.per_site.items():  # noise is there: the released counts are not exact
        from domains.runtime.noisy_metrics import coarsen

        assert not np.array_equal(counts.score_histograms, coarsen(exact[name].score_histograms, bins=BINS))

    accountant = RDPAccountant()
    accountant.step(noise_multiplier=TEST_SIGMA, sample_rate=1.0)
    expected = accountant.get_epsilon(delta=1e-5)  # each site's 200 test images: the default δ
    for site in sites:
        name = site.config.name
        assert result.privacy[name]["epsilon"] == pytest.approx(expected, rel=1e-6)
        assert table.loc[name, "ε spent"] == pytest.approx(expected, rel=1e-6)
        test_ledger = _ledger(site, "chest-test")
        ev_line = test_ledger["jobs"][f"eval-{result.spec.eval_id}"]
        assert list(ev_line["charges"]) == ["1"]
        assert _ledger(site, "chest") == train_before[name]  # the training dataset pays nothing


def test_an_evaluation_naming_the_training_dataset_or_bound_to_it_is_refused(
        encrypted: dict[str, Any], federation: dict[str, Any]) -> None:
    """The attacks: score on the images the model trained on, or bind the training labels."""
    from support import login

    from domains.runtime.templates import evaluate_function_name, evaluate_source
    from domains.site.connection import admin_client, quiet
    from orchestrator.site import Site
    from orchestrator.submit import load_submitted
    from orchestrator.transport import call_site

    spec, h1 = encrypted["result"].spec, federation["sites"][0]
    password = h1.add_scientist("mallory@lab.example")
    mallory = Site("h1", h1.url, login(h1.url, "mallory@lab.example", password), "h1")
    folder = federation["root"] / "mallory"
    folder.mkdir(exist_ok=True)

    def submit(eval_id: str, constant: dict[str, Any], bound: str) -> str:
        path = folder / f"{evaluate_function_name(eval_id)}.py"
        path.write_text(evaluate_source(eval_id=eval_id))
        function = load_submitted(path, mallory, bound, module_name=path.stem,
                                  constants={"eval_spec": constant})
        with quiet():
            return str(mallory.client.code.request_code_execution(function).id)

    on_train = {"eval_id": "aaaaaa000001", "job": spec.to_dict(), "dataset": "chest", "noise_multiplier": 2.0,
                "bins": 10, "model": "final"}
    rid = submit("aaaaaa000001", on_train, "chest")
    review = RequestBook(h1.data_dir).review(rid)
    assert review.verdict.kind == "evaluate"  # medsyft's own template: only the constant lies
    assert any("trained on" in r for r in review.privacy.refusals)
    refused = run_cli("domain", "approve", "--data-dir", str(h1.data_dir.path), rid)
    assert refused.code == 2 and "trained on" in refused.err
    RequestBook(h1.data_dir).deny(rid, reason="a test score on training images")

    mislabelled = {**on_train, "eval_id": "aaaaaa000002", "dataset": "chest-test"}
    rid = submit("aaaaaa000002", mislabelled, "chest")  # names the test set, binds the training labels
    review = RequestBook(h1.data_dir).review(rid)
    assert any("bound to chest/labels" in r for r in review.privacy.refusals)
    refused = run_cli("domain", "approve", "--data-dir", str(h1.data_dir.path), rid)
    assert refused.code == 2 and "bound to chest/labels" in refused.err
    before = _ledger(h1, "chest-test")
    with quiet():  # the owner presses PySyft's own button anyway: the runtime still refuses
        next(r for r in admin_client(h1.data_dir).requests if str(r.id) == rid).approve(disable_warnings=True)
    outcome = call_site(mallory, evaluate_function_name("aaaaaa000002"), mallory.asset("chest", "labels"),
                        None, {"model": "final"}, constant_name="evaluation")
    assert outcome.status == "error" and "does not match dataset 'chest-test'" in outcome.error
    assert _ledger(h1, "chest-test") == before  # refused before any charge


def test_an_evaluation_over_the_test_datasets_budget_cannot_be_approved(
        encrypted: dict[str, Any], federation: dict[str, Any]) -> None:
    from domains.errors import PolicyRefused
    from domains.shared.eval_spec import EvalSpec
    from orchestrator import evaluate

    job = encrypted["job"]
    greedy = EvalSpec(job=encrypted["result"].spec, dataset="chest-test", noise_multiplier=0.1)  # ε > 10
    by_name = {s.config.name: s for s in federation["sites"]}
    before = {name: _ledger(site, "chest-test") for name, site in by_name.items()}
    for sub in evaluate.submit_evaluation(job.sites, greedy, job.run_dir):
        book = RequestBook(by_name[sub.site].data_dir)
        assert any("does not fit" in r for r in book.review(sub.request_id).privacy.refusals)
        with pytest.raises(PolicyRefused, match="does not fit the test dataset's remaining budget"):
            book.approve(sub.request_id)
        book.deny(sub.request_id, reason="over the test set's budget")
    assert {name: _ledger(site, "chest-test") for name, site in by_name.items()} == before


def test_a_plaintext_jobs_final_model_is_sent_and_scored(federation: dict[str, Any]) -> None:
    from domains.shared.counts import pool
    from orchestrator.errors import NotApproved

    job = _job(federation, "plain-run", he=False)
    result = _train(federation, job)
    assert result.weights is not None
    table = job.request_evaluation()
    assert set(table["status"]) == {"pending"}
    with pytest.raises(NotApproved, match="not yet reviewed"):
        job.fetch_evaluation()
    spec = job.evaluation_spec()
    assert spec is not None and spec.model == "sent"
    approve_all(federation["sites"])
    scored = job.fetch_evaluation()
    exact = pool([_exact(s, result.spec, weights=result.weights) for s in federation["sites"]])
    acc_sd = scored.table().set_index("site").loc["pooled", "± (noise sd)"]
    assert abs(scored.pooled.accuracy - exact.accuracy) < 6 * acc_sd
    stored = json.loads((job.run_dir.path / "evaluation" / spec.eval_id / "results.json").read_text())
    assert stored["headline"] == scored.line() and set(stored["per_site"]) == set(NAMES)


def test_a_model_of_another_layout_is_refused_before_any_charge_and_loses_nothing(
        federation: dict[str, Any]) -> None:
    from domains.runtime.models import build_model
    from domains.runtime.weights import get_weights
    from domains.shared.codec import to_wire
    from domains.shared.plain_model import PlainModel
    from orchestrator.transport import call_site

    job = _job(federation, "plain-run", he=False)  # the run above: a fresh evaluation of it
    job.request_evaluation(new=True)
    spec = job.evaluation_spec()
    approve_all(federation["sites"])
    h1 = federation["sites"][0]
    other = build_model("resnet18", in_channels=1, num_classes=2, image_size=28, seed=0)
    site = next(s for s in job.sites if s.name == "h1")
    before = _ledger(h1, "chest-test")
    outcome = call_site(site, f"medsyft_evaluate_{spec.eval_id}", site.asset("chest-test", "labels"), None,
                        {"model": "sent", "weights": to_wire(PlainModel.from_weights(get_weights(other)))},
                        constant_name="evaluation")
    assert outcome.status == "error" and "do not match the approved model" in outcome.error, outcome.error
    assert _ledger(h1, "chest-test") == before
    scored = job.fetch_evaluation()  # a refused call read nothing: the true model may still be scored
    assert set(scored.per_site) == set(NAMES) and not scored.not_evaluated
