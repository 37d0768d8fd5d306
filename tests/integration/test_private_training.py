"""The privacy defaults end to end: DP-SGD under ε budgets and encrypted aggregation.

Three real datasite processes hold the hospitals' HE secret key from a real key ceremony;
the orchestrator (this test process) holds only the public file. Real Opacus, real
TenSEAL, nothing mocked.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import approve_all, deploy_sites, ledger_calls, run_and_crash_after_round_1, run_cli

from domains.review.requests import RequestBook

pytestmark = pytest.mark.slow

COUNT = 1500
NAMES = ("p1", "p2", "p3")
ROUNDS, EPOCHS, BATCH, SIGMA, EVAL_SIGMA = 4, 1, 64, 1.2, 5.0


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from privacy.he import init_keys

    os.environ["MEDSYFT_TORCH_THREADS"] = "1"
    root = tmp_path_factory.mktemp("private")
    secret, public, key_id = init_keys(root / "keys")
    other_secret, other_public, _ = init_keys(root / "other-keys")  # another federation's keys
    sites = deploy_sites(root, NAMES, he_key=secret)
    (root / "secrets").mkdir()
    for i, site in enumerate(sites, start=1):
        site.publish(name="chest", shard=f"{i}/3", partition="iid", seed=0, synthetic_count=COUNT)
        (root / "secrets" / f"{site.config.name}.txt").write_text(site.add_scientist("ds@lab.example"))
    yield {"root": root, "sites": sites, "key_id": key_id, "public": public,
           "other_public": other_public, "other_secret": other_secret}
    for site in sites:
        site.stop()


def write_config(fed: dict[str, Any], run: str, *, sites: tuple[str, ...] = NAMES,
                 public: Path | None = None, dataset: str = "chest", rounds: int = ROUNDS,
                 he: bool = True, eval_every: int = 1) -> Path:
    lines = ["[job]", f'dataset = "{dataset}"', 'model = "small-cnn"', f"rounds = {rounds}",
             f"eval_every = {eval_every}",
             f"local_epochs = {EPOCHS}", f"batch_size = {BATCH}", "lr = 0.01", "min_sites = 1",
             "round_timeout = 120", "approval_timeout = 30", f'run_dir = "{run}"', "",
             "[privacy]", f"noise_multiplier = {SIGMA}", f"eval_noise_multiplier = {EVAL_SIGMA}",
             f'he_public_key = "{public or fed["public"]}"' if he else "he = false"]
    for site in fed["sites"]:
        if site.config.name in sites:
            lines += ["", "[[sites]]", f'name = "{site.config.name}"', f'url = "{site.url}"',
                      'email = "ds@lab.example"', f'password_file = "secrets/{site.config.name}.txt"']
    lines += ["", "[baseline]", 'source = "synthetic"', f"count = {COUNT}", 'partition = "iid"',
              "seed = 0"]
    path = fed["root"] / f"{run}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def new_job(fed: dict[str, Any], run: str, **kw: Any) -> Any:
    from orchestrator import FederatedJob, load_config

    return FederatedJob(load_config(write_config(fed, run, **kw)))


@pytest.fixture(scope="module")
def trained(federation: dict[str, Any]) -> dict[str, Any]:
    job = new_job(federation, "main")
    job.submit()
    reviews = {s.config.name: RequestBook(s.data_dir).review(RequestBook(s.data_dir).table()["id"][0])
               for s in federation["sites"]}
    approve_all(federation["sites"])
    job.wait_for_approval(timeout=30)
    return {"job": job, "result": job.run(progress=False), "reviews": reviews}


def test_review_shows_the_jobs_epsilon_and_its_key(trained: dict[str, Any]) -> None:
    for review in trained["reviews"].values():
        text = "\n".join(review.privacy.lines)
        assert f"noise σ={SIGMA:.3f}" in text and "this job alone: ε=" in text
        assert "budget ε=10" in text and f"under key {trained['job'].he_context.key_id[:8]}" in text
        assert len(review.privacy.warnings) == 1  # no roster in this job: the owner is told so
        assert "sums are NOT verifiable" in review.privacy.warnings[0]


def test_orchestrator_holds_no_secret_key_and_no_plaintext_model(trained: dict[str, Any]) -> None:
    from orchestrator.errors import ReleaseRequired
    from privacy.errors import NoSecretKey
    from privacy.he import EncryptedVector

    job, result = trained["job"], trained["result"]
    context = job.he_context
    assert not context.has_secret and not context._tenseal.is_private()
    final = job.run_dir.load_global(ROUNDS)
    assert isinstance(final, EncryptedVector) and final.n_parts == 3
    with pytest.raises(NoSecretKey):
        context.decrypt_mean(final)  # the orchestrator tries to read the global model, and cannot
    assert result.weights is None
    with pytest.raises(ReleaseRequired, match="release"):
        result.final_model()
    saved = [p.name for p in job.run_dir.path.glob("global-*.npz")]
    assert "global-0.npz" not in saved  # round 0 is built by the sites, never stored in plaintext


def test_encrypted_updates_cost_at_most_4x_float32(trained: dict[str, Any]) -> None:
    timing = trained["result"].timing
    assert len(timing) == ROUNDS and (timing["x_float32"] <= 4.0).all(), timing
    history = trained["result"].history
    assert (history["status"] == "ok").all() and (history["update_bytes"] > 0).all()
    assert history["train_loss"].isna().all()  # the training loss is not a DP release: never sent


def test_reported_epsilon_equals_opacus_recomputation(trained: dict[str, Any],
                                                      federation: dict[str, Any]) -> None:
    spec = trained["result"].spec
    eps = trained["result"].epsilon()
    for site in federation["sites"]:  # every call releases noisy validation counts once
        expected = _opacus_epsilon(site, spec, rounds=ROUNDS, releases=ROUNDS + 1)
        row = eps.loc[site.config.name]
        assert row["job_epsilon_spent"] == pytest.approx(expected, rel=1e-6)
        assert row["dataset_epsilon_remaining"] == pytest.approx(10.0 - expected, rel=1e-6)
        shown = run_cli("domain", "budget", "--data-dir", str(site.data_dir.path))
        assert shown.code == 0 and f"{expected:.4f}" in shown.out


def _opacus_epsilon(site: Any, spec: Any, *, rounds: int, releases: int) -> float:
    """A job's ε on one site's dataset, recomputed step by step with Opacus's own accountant."""
    from opacus.accountants import RDPAccountant

    from domains.data import store
    from domains.runtime.noisy_metrics import hash_split
    from domains.site.datadir import DataDir

    stored = store.load(DataDir(site.data_dir.path), "chest")
    train, _ = hash_split(stored.images, val_fraction=spec.val_fraction, seed=spec.split_seed)
    steps_per_epoch = math.ceil(len(train) / BATCH)
    accountant = RDPAccountant()
    for _ in range(rounds * EPOCHS * steps_per_epoch):
        accountant.step(noise_multiplier=SIGMA, sample_rate=1 / steps_per_epoch)
    for _ in range(releases):
        accountant.step(noise_multiplier=EVAL_SIGMA, sample_rate=1.0)
    return float(accountant.get_epsilon(delta=1e-5))


def test_eval_every_releases_counts_only_at_the_approved_calls(federation: dict[str, Any]) -> None:
    """The attack: the scientist approved for 2 evaluations passes a spec asking for one every call."""
    from orchestrator.transport import call_site

    job = new_job(federation, "sparse", sites=("p2", "p3"), rounds=3, he=False, eval_every=2)
    job.submit()
    state = job.state()
    book = RequestBook(federation["sites"][1].data_dir)
    text = "\n".join(book.review(state.submissions[0].request_id).privacy.lines)
    assert "evaluation: 2 noisy metric releases" in text and "at calls 2, 4 only (eval_every 2)" in text
    approve_all(federation["sites"], only=("p2", "p3"))
    site, fn = job.sites[0], state.submissions[0].function
    every_call = replace(state.spec, eval_every=1).to_dict()
    first = call_site(site, fn, site.asset("chest", "labels"), every_call,
                      {"call": 1, "weights": None, "weight": 0.5})
    assert first.status == "ok", first.error
    assert first.result["eval"] is None  # the approved spec decides, not the one the call passes
    trained_only = _opacus_epsilon(federation["sites"][1], state.spec, rounds=1, releases=0)
    assert first.result["privacy"]["job_epsilon_spent"] == pytest.approx(trained_only, rel=1e-6)
    result = job.run(progress=False)  # call 1 at p2 replays; everything else runs
    assert sorted(set(result.metrics["model_round"])) == [1, 3]  # the models of calls 2 and 4
    for site in federation["sites"][1:]:
        expected = _opacus_epsilon(site, result.spec, rounds=3, releases=2)
        spent = result.epsilon().loc[site.config.name]["job_epsilon_spent"]
        assert spent == pytest.approx(expected, rel=1e-6)
        assert expected < _opacus_epsilon(site, result.spec, rounds=3, releases=4)
    assert ledger_calls(federation["root"], "p3", result.spec.job_id) == [1, 2, 3, 4]


def test_a_release_naming_fewer_sites_than_the_roster_is_refused(trained: dict[str, Any],
                                                                federation: dict[str, Any]) -> None:
    """The attack: a scientist asks one hospital for a release that says it is the only site."""
    from support import login

    from domains.runtime.templates import release_function_name, release_source
    from domains.site.connection import admin_client, quiet
    from orchestrator.site import Site
    from orchestrator.submit import load_submitted
    from orchestrator.transport import call_site

    job, p1 = trained["job"], federation["sites"][0]
    spec = job.state().spec
    password = p1.add_scientist("mallory@lab.example")
    mallory = Site("p1", p1.url, login(p1.url, "mallory@lab.example", password), "p1")
    path = job.run_dir.path.parent / "mallory" / f"{release_function_name(spec.job_id)}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(release_source(job_id=spec.job_id))
    lone = {"job": spec.to_dict(), "site_index": 0, "n_sites": 1, "sites": ["p1"]}
    function = load_submitted(path, mallory, "chest", module_name="mallory_release",
                              constants={"release_spec": lone})
    with quiet():
        request = mallory.client.code.request_code_execution(function)
    rid = str(request.id)
    review = RequestBook(p1.data_dir).review(rid)
    assert review.verdict.kind == "release"  # medsyft's own template: only the constant lies
    assert any("roster is ['p1', 'p2', 'p3']" in w for w in review.privacy.warnings)
    refused = run_cli("domain", "approve", "--data-dir", str(p1.data_dir.path), rid)
    assert refused.code == 2 and "every one of them must take part" in refused.err
    with quiet():  # the owner presses PySyft's own button anyway: the datasite still refuses
        next(r for r in admin_client(p1.data_dir).requests if str(r.id) == rid).approve(
            disable_warnings=True)
    final = job.run_dir.load_global(spec.rounds)
    outcome = call_site(mallory, release_function_name(spec.job_id), mallory.asset("chest", "labels"),
                        None, {"final": final.to_dict()}, constant_name="release")
    assert outcome.status == "error" and "approved job's roster is ['p1', 'p2', 'p3']" in outcome.error
    assert "share" not in outcome.result


def test_release_needs_every_owner_and_gives_the_sites_model(trained: dict[str, Any],
                                                             federation: dict[str, Any],
                                                             tmp_path: Path) -> None:
    from support import save_image

    from domains import generate_chest_phantoms
    from domains.runtime.final_model import released_model
    from domains.runtime.weights import flatten, get_weights
    from domains.site.datadir import DataDir
    from orchestrator.baseline import evaluate_weights
    from orchestrator.errors import ReleaseRequired

    job = trained["job"]
    job_id = job.state().spec.job_id
    images = tmp_path / "clinic"
    for i, image in enumerate(generate_chest_phantoms(3, image_size=28, seed=5).images):
        save_image(images / f"patient{i}.png", image[0])
    assert set(job.request_release()["status"]) == {"pending"}
    approve_all(federation["sites"], only=("p1", "p2"))

    def predict_at(site: Any) -> Any:
        return run_cli("predict", "--data-dir", str(site.data_dir.path), "--job", job_id, "--images",
                       str(images))

    early = predict_at(federation["sites"][0])  # p1's owner approved: its own copy, without the scientist
    assert early.code == 0 and early.out.count("patient") == 3, early.err
    refused = predict_at(federation["sites"][2])  # p3's owner has not
    assert refused.code == 2 and "not released on this datasite" in refused.err
    with pytest.raises(ReleaseRequired, match="p3"):
        job.fetch_release()
    approve_all(federation["sites"], only=("p3",))
    released = job.fetch_release()
    vector = flatten(released.weights)[0]
    _, local = released_model(DataDir(federation["sites"][0].data_dir.path), released.spec.job_id)
    assert np.allclose(vector, local, atol=1e-6)  # what the scientist got is what the sites hold
    hospital_model = federation["sites"][1].released_model(released.spec.job_id)
    assert np.allclose(flatten(get_weights(hospital_model))[0], vector, atol=1e-6)  # local inference
    record = json.loads((job.run_dir.path / "release" / "release.json").read_text())
    assert record["rounds"] == ROUNDS and record["sites"] == list(NAMES)
    assert set(record["epsilon_per_site"]) == set(NAMES) and record["dp"] is True
    exact = evaluate_weights(job.config, released.spec, released.weights)
    assert exact.auc > 0.75, exact  # it learned under DP (measured: ~0.9)
    card = json.loads((job.run_dir.path / "release" / "model_card.json").read_text())
    assert card["privacy"]["dp"] and card["privacy"]["he"] and card["privacy"]["noise_multiplier"] == SIGMA
    for site, spent in record["epsilon_per_site"].items():  # what each datasite's ledger charged
        assert card["privacy"]["per_site"][site]["epsilon"] == pytest.approx(spent["epsilon"])
    released_by = {a["site"] for a in card["approvals"]
                   if a["what"] == "release" and a["status"] == "approved"}
    assert released_by == set(NAMES) and card["training"]["strategy"]["encrypted_aggregation"] is True
    at_p2 = predict_at(federation["sites"][1])
    scientist = run_cli("predict", "--model", str(job.run_dir.path / "release"), "--images", str(images))
    assert at_p2.code == scientist.code == 0
    assert at_p2.out.splitlines()[1:] == scientist.out.splitlines()[1:]  # one model, the same probabilities


def test_dp_constants_cannot_change_and_foreign_ciphertexts_are_refused(
        federation: dict[str, Any]) -> None:
    from orchestrator.transport import call_site
    from privacy.he import EncryptedVector, load_context

    job = new_job(federation, "tamper", sites=("p1", "p2"), rounds=1)
    job.submit()
    approve_all(federation["sites"], only=("p1",))
    state = job.state()
    site, fn = job.sites[0], state.submissions[0].function
    labels = site.asset("chest", "labels")
    approved = state.spec.to_dict()
    first = call_site(site, fn, labels, approved, {"call": 1, "weights": None, "weight": 0.5})
    assert first.status == "ok", first.error
    foreign = load_context(federation["other_secret"]).encrypt_weighted(
        np.zeros(first.result["weights"]["length"], np.float32), weight=1.0, bound=4.0)
    refused = call_site(site, fn, labels, approved, {"call": 2, "weights": foreign.to_dict()})
    assert refused.status == "error" and "KeyMismatch" in refused.error and "key" in refused.error
    dp = replace(state.spec.dp, noise_multiplier=0.01, max_grad_norm=100.0)
    tampered = replace(state.spec, dp=dp, train=replace(state.spec.train, epochs=50)).to_dict()
    alone = job.he_context.aggregate([EncryptedVector.from_dict(first.result["weights"])])
    one = call_site(site, fn, labels, approved, {"call": 2, "weights": alone.to_dict()})
    assert one.status == "error" and "fewer than the 2 this job was approved with" in one.error
    part = EncryptedVector.from_dict(first.result["weights"])
    final = job.he_context.aggregate([part, part])
    ok = call_site(site, fn, labels, tampered, {"call": 2, "weights": final.to_dict()})
    assert ok.status == "ok", ok.error
    assert ok.result["privacy"]["noise_multiplier"] == SIGMA  # the approved σ, not the tampered one


def test_job_from_another_key_fails_with_a_clear_error(federation: dict[str, Any]) -> None:
    from orchestrator.errors import QuorumLost

    job = new_job(federation, "otherkey", sites=("p2", "p3"), public=federation["other_public"], rounds=1)
    job.submit()
    book = RequestBook(federation["sites"][1].data_dir)
    pending = job.state().submissions[0].request_id
    assert any("its calls will be refused" in w for w in book.review(pending).privacy.warnings)
    approve_all(federation["sites"], only=("p2", "p3"))
    with pytest.raises(QuorumLost, match="was encrypted for key"):
        job.run(progress=False)


def test_resume_under_he_continues_from_the_encrypted_checkpoint(federation: dict[str, Any]) -> None:
    from privacy.he import EncryptedVector

    job = new_job(federation, "resume", sites=("p2", "p3"), rounds=2)
    job.submit()
    approve_all(federation["sites"], only=("p2", "p3"))

    run_and_crash_after_round_1(job)
    assert job.state().completed_round == 1
    assert isinstance(job.run_dir.load_global(1), EncryptedVector)
    resumed = new_job(federation, "resume", sites=("p2", "p3"), rounds=2).run(progress=False)
    assert list(resumed.history["round"]) == [1, 1, 2, 2]  # two sites, each round once
    assert ledger_calls(federation["root"], "p3", resumed.spec.job_id) == [1, 2, 3]


class RobotOwners:
    """Approves every pending request at every site until stopped: the notebook's data owners."""

    def __init__(self, sites: list[Any]) -> None:
        import threading

        self.sites, self.stop = sites, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.wait(1.0):
            try:
                approve_all(self.sites)
            except Exception:  # a racing approval is retried on the next pass
                continue

    def __enter__(self) -> RobotOwners:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)


def run_notebook(name: str) -> Any:
    import nbformat
    from nbclient import NotebookClient

    folder = Path(__file__).resolve().parents[2] / "notebooks"
    notebook = nbformat.read(folder / name, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(folder)}}).execute()
    return notebook


def _outputs(notebook: Any) -> str:
    return "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                     + str(o.get("data", {}).get("text/markdown", ""))
                     for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)


def test_notebooks_run_against_the_federation(federation: dict[str, Any],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSYFT_JOB", str(write_config(federation, "notebook", rounds=1)))
    monkeypatch.setenv("MEDSYFT_RUN_DIR", "nb-run")
    monkeypatch.setenv("MEDSYFT_ROUNDS", "1")
    monkeypatch.setenv("MEDSYFT_APPROVAL_TIMEOUT", "120")
    with RobotOwners(federation["sites"]):
        scientist = _outputs(run_notebook("data_scientist.ipynb"))
    assert "job_epsilon_spent" in scientist and "x_float32" in scientist
    assert (federation["root"] / "nb-run" / "release" / "model.npz").exists()
    assert "Model card: job" in scientist and "p(pneumonia)" in scientist  # the card, then predictions
    monkeypatch.setenv("MEDSYFT_DATA_DIR", str(federation["sites"][2].data_dir.path))
    owner = _outputs(run_notebook("data_owner.ipynb"))
    assert "RELEASE of job" in owner and "spent_epsilon" in owner


def test_over_budget_job_cannot_be_approved_and_ledger_survives_restart(
        federation: dict[str, Any]) -> None:
    from domains import Datasite
    p1 = federation["sites"][0]
    out = run_cli("domain", "publish", "--data-dir", str(p1.data_dir.path), "--name", "tiny",
                  "--count", "300", "--epsilon-budget", "0.5")
    assert out.code == 0 and "privacy budget ε=0.5" in out.out
    job = new_job(federation, "greedy", sites=("p1",), dataset="tiny", he=False)
    job.submit()
    book = RequestBook(p1.data_dir)
    pending = book.table().query("status == 'pending'")["id"].iloc[0]
    before = run_cli("domain", "budget", "--data-dir", str(p1.data_dir.path), "--jobs")
    refused = run_cli("domain", "approve", "--data-dir", str(p1.data_dir.path), pending)
    assert refused.code == 2 and refused.err.count("\n") == 1
    assert "would bring dataset 'tiny' to ε=" in refused.err and "deny it" in refused.err
    assert book.table().set_index("id").loc[pending, "status"] == "pending"
    assert run_cli("domain", "budget", "--data-dir", str(p1.data_dir.path), "--jobs").out == before.out
    p1.stop()
    Datasite.deploy(p1.data_dir.path, name=None, port=int(p1.url.rsplit(":", 1)[1]))
    after = run_cli("domain", "budget", "--data-dir", str(p1.data_dir.path), "--jobs")
    assert after.code == 0 and after.out == before.out and "chest" in after.out
