"""Federated training across three real datasite processes on 127.0.0.1.

Each hospital publishes its Dirichlet shard of the synthetic chest phantoms; a
scientist submits one job; owners approve through the real request path; rounds
run in parallel. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from support import (
    approve_all,
    deploy_sites,
    ledger_calls,
    ledger_states,
    run_and_crash_after_round_1,
    run_cli,
)

pytestmark = pytest.mark.slow

COUNT = 1200
NAMES = ("h1", "h2", "h3")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    os.environ["MEDSYFT_TORCH_THREADS"] = "1"  # three datasites share the machine's cores
    root = tmp_path_factory.mktemp("federation")
    sites = deploy_sites(root, NAMES)
    secrets = root / "secrets"
    secrets.mkdir()
    for i, site in enumerate(sites, start=1):
        site.publish(name="chest", shard=f"{i}/3", partition="dirichlet:1.0", seed=0,
                     synthetic_count=COUNT)
        (secrets / f"{site.config.name}.txt").write_text(site.add_scientist("ds@lab.example"))
    yield {"root": root, "sites": sites}
    for site in sites:
        site.stop()


def write_config(fed: dict[str, Any], run: str, **job: Any) -> Path:
    settings = {"dataset": "chest", "model": "small-cnn", "rounds": 3, "local_epochs": 1,
                "batch_size": 32, "lr": 0.001, "min_sites": 2, "round_timeout": 120,
                "approval_timeout": 30, "run_dir": run, **job}
    lines = ["[job]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    # The mechanics of federated training, without DP noise and encryption (explicitly off);
    # tests/integration/test_private_training.py runs the defaults.
    lines += ["", "[privacy]", "dp = false", "he = false"]
    for site in fed["sites"]:
        lines += ["", "[[sites]]", f'name = "{site.config.name}"', f'url = "{site.url}"',
                  'email = "ds@lab.example"', f'password_file = "secrets/{site.config.name}.txt"']
    lines += ["", "[baseline]", 'source = "synthetic"', f"count = {COUNT}",
              'partition = "dirichlet:1.0"', "seed = 0"]
    path = fed["root"] / f"{run}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def new_job(fed: dict[str, Any], run: str, **job: Any) -> Any:
    from orchestrator import FederatedJob, load_config

    return FederatedJob(load_config(write_config(fed, run, **job)))


def test_federated_training_learns_and_matches_centralized(federation: dict[str, Any]) -> None:
    from orchestrator import comparison, holdout, train_centralized

    job = new_job(federation, "learn", rounds=8, local_epochs=2)
    assert set(job.submit()["status"]) == {"pending"}
    approve_all(federation["sites"])
    job.wait_for_approval(timeout=30)
    result = job.run(progress=False)
    pooled = result.pooled()
    assert list(pooled.index) == list(range(9))  # initial model, then one per round
    assert pooled.loc[8, "accuracy"] > pooled.loc[0, "accuracy"] + 0.1
    assert pooled.loc[8, "auc"] > 0.85
    assert (result.history["status"] == "ok").all() and len(result.history) == 24
    per_site = result.metrics[result.metrics["site"] != "pooled"]
    assert set(per_site["site"]) == set(NAMES)
    central = train_centralized(job.config, result.spec)
    assert result.weights is not None
    federated_test, why = holdout.score_job(job.config, result.spec, result.weights)
    assert federated_test is not None and central.test is not None, why
    assert federated_test.metrics.n == central.test.metrics.n == COUNT // 4  # a fresh draw
    table = comparison(result.summary(), central, federated_test=federated_test)
    gap = abs(table.loc["federated (FedAvg)", "val_accuracy"] - table.loc["centralized", "val_accuracy"])
    assert gap < 0.05, table  # measured here: 0.929 vs 0.946
    assert (table["test_accuracy"] > 0.75).all() and (table["test_roc_auc"] > 0.85).all(), table
    assert result.plot().exists()
    stored = job.result()  # read back from the run directory, as `medsyft baseline` does
    assert stored is not None and stored.weights is not None
    assert stored.weights.keys() == result.weights.keys()
    assert all(np.array_equal(stored.weights[k], result.weights[k]) for k in result.weights)
    shown = run_cli("baseline", "--config", str(federation["root"] / "learn.toml"))
    assert shown.code == 0 and "test_accuracy" in shown.out and "test split (fresh synthetic" in shown.out


def test_more_calls_than_approved_are_refused(federation: dict[str, Any]) -> None:
    from orchestrator.transport import call_site

    job = new_job(federation, "learn", rounds=8, local_epochs=2)  # finished by the test above
    state = job.state()
    assert state is not None and state.finished
    site = job.sites[0]
    fn = state.submissions[0].function
    labels = site.asset("chest", "labels")
    weights = job.run_dir.load_global(state.spec.rounds)
    over = call_site(site, fn, labels, state.spec.to_dict(),
                     {"call": state.spec.max_calls + 1, "weights": weights})
    assert over.status == "error" and "ExecutionLimitReached" in over.error
    # Replaying a call that ran returns its stored result: no new training, nothing new released.
    ledger = site_ledger(federation, site.name, state.spec.job_id)
    replay = call_site(site, fn, labels, state.spec.to_dict(), {"call": 1, "weights": weights})
    assert replay.status == "ok" and replay.result["replayed"] is True
    assert site_ledger(federation, site.name, state.spec.job_id) == ledger
    # A changed constant is ignored: the approved job is what runs.
    tampered = replace(state.spec, train=replace(state.spec.train, epochs=50)).to_dict()
    again = call_site(site, fn, labels, tampered, {"call": 2, "weights": weights})
    assert again.status == "ok" and again.result["replayed"] is True


def site_ledger(fed: dict[str, Any], name: str, job_id: str) -> list[int]:
    return ledger_calls(fed["root"], name, job_id)


def test_unapproved_site_blocks_with_clear_status(federation: dict[str, Any]) -> None:
    job = new_job(federation, "partial")
    job.submit()
    approve_all(federation["sites"], only=("h1", "h2"))
    from orchestrator.errors import NotApproved

    with pytest.raises(NotApproved, match="h3"):
        job.wait_for_approval(timeout=3)
    result = run_cli("train", "--config", str(federation["root"] / "partial.toml"),
                     "--approval-timeout", "2", "--quiet")
    assert result.code == 2 and "h3" in result.err and len(result.err.strip().splitlines()) == 1


def test_resume_runs_each_round_once(federation: dict[str, Any]) -> None:
    job = new_job(federation, "resume", rounds=3)
    job.submit()
    approve_all(federation["sites"])
    job.wait_for_approval(timeout=30)

    run_and_crash_after_round_1(job)
    assert job.state().completed_round == 1
    resumed = new_job(federation, "resume", rounds=3).run(progress=False)
    assert sorted(resumed.history["round"].unique()) == [1, 2, 3]
    assert (resumed.history.groupby("round").size() == 3).all()  # each site once per round
    for name in NAMES:
        assert site_ledger(federation, name, resumed.spec.job_id) == [1, 2, 3, 4]


def test_hung_site_times_out_and_the_round_goes_on(federation: dict[str, Any]) -> None:
    import signal
    import threading

    from domains.site.lifecycle import read_pid

    sites = federation["sites"]
    job = new_job(federation, "hang", rounds=1, min_sites=2, round_timeout=6)
    job.submit()
    approve_all(sites)
    job.wait_for_approval(timeout=30)
    _ = job.sites
    pid = read_pid(sites[1].data_dir)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # the datasite process freezes: its calls hang, not fail
    try:
        result = job.run(progress=False)
        # The abandoned calls are still blocked on the frozen site; they must not be able to
        # keep the orchestrator process alive (daemon threads do not block interpreter exit).
        stragglers = [t for t in threading.enumerate() if t.name == "medsyft-call-h2"]
        assert stragglers and all(t.daemon for t in stragglers)
    finally:
        os.kill(pid, signal.SIGCONT)
    h2 = result.history[result.history["site"] == "h2"]
    assert list(h2["status"]) == ["timeout"] and "no answer within 6 s" in h2["error"].iloc[0]
    assert (result.history[result.history["site"] != "h2"]["status"] == "ok").all()
    assert set(result.metrics[result.metrics["model_round"] == 1]["site"]) == {"h1", "h3", "pooled"}


def test_stopped_site_is_skipped_then_quorum_stops_the_job(federation: dict[str, Any]) -> None:
    from domains import Datasite
    from orchestrator.errors import QuorumLost

    sites = federation["sites"]
    job = new_job(federation, "fault", rounds=2, min_sites=2, round_timeout=60)
    strict = new_job(federation, "strict", rounds=1, min_sites=3, round_timeout=60)
    for j in (job, strict):
        j.submit()
    approve_all(sites)
    job.wait_for_approval(timeout=30)
    strict.wait_for_approval(timeout=30)
    _ = job.sites, strict.sites  # connected before the outage
    down = sites[2]
    port = down.config.port
    down.stop()
    try:
        result = job.run(progress=False)
        skipped = result.history[result.history["site"] == "h3"]
        assert list(skipped["status"]) == ["error", "error"] and skipped["error"].str.len().min() > 0
        assert (result.history[result.history["site"] != "h3"]["status"] == "ok").all()
        with pytest.raises(QuorumLost, match="only 2 of 3 sites succeeded, 3 needed"):
            strict.run(progress=False)
    finally:
        sites[2] = Datasite.deploy(down.data_dir.path, name=None, port=port)


def test_calls_run_in_order_and_a_failure_on_private_data_is_final(federation: dict[str, Any]) -> None:
    """A hostile scientist calls out of order, then makes training fail and retries it."""
    import numpy as np

    from orchestrator.transport import call_site

    job = new_job(federation, "hostile-calls", rounds=2)
    job.submit()
    approve_all(federation["sites"], only=("h1",))
    state = job.state()
    site, fn = job.sites[0], state.submissions[0].function
    labels = site.asset("chest", "labels")
    early = call_site(site, fn, labels, None, {"call": 2, "weights": None})
    assert early.status == "error" and "needs call 1 to have completed" in early.error
    from domains.runtime.models import build_model
    from domains.runtime.weights import flatten, get_weights

    spec = state.spec
    vector, _ = flatten(get_weights(build_model(spec.model, in_channels=spec.in_channels,
                                                num_classes=spec.num_classes, image_size=spec.image_size)))
    poisoned = np.full_like(vector, np.nan)
    failed = call_site(site, fn, labels, None, {"call": 1, "weights": poisoned})
    assert failed.status == "error" and "PrivateComputationFailed" in failed.error
    assert "nan" not in failed.error.lower() and "reference" in failed.error  # nothing data-dependent
    retry = call_site(site, fn, labels, None, {"call": 1, "weights": vector})
    assert retry.status == "error" and "already failed" in retry.error
    log = (site_dir(federation, "h1") / "datasite.log").read_text()
    assert failed.error.rsplit("reference ", 1)[1][:8] in log  # the owner can find the reason
    entries = [json.loads(x) for x in (site_dir(federation, "h1") / "jobs" / spec.job_id
                                       / "ledger.jsonl").read_text().splitlines()]
    assert [(e["call"], e["state"]) for e in entries] == [(1, "started"), (1, "failed")]


def site_dir(fed: dict[str, Any], name: str) -> Path:
    return fed["root"] / name


def test_a_datasite_reads_both_orchestrator_versions_and_refuses_another_models_layout(
        federation: dict[str, Any]) -> None:
    """Hospitals upgrade separately: the previous orchestrator's bare float32 vector still trains
    (and gets a bare vector back); a model of the current form whose layout is not the approved
    model's is refused with one line, before any private data is read, and may be sent again."""
    import numpy as np

    from domains.runtime.models import build_model
    from domains.runtime.weights import get_weights
    from domains.shared import codec
    from domains.shared.plain_model import PlainModel
    from orchestrator.transport import call_site

    job = new_job(federation, "codec-forms", rounds=2)
    job.submit()
    approve_all(federation["sites"], only=("h1",))
    state = job.state()
    site, fn, spec = job.sites[0], state.submissions[0].function, state.spec
    labels = site.asset("chest", "labels")
    net = build_model(spec.model, in_channels=spec.in_channels, num_classes=spec.num_classes,
                      image_size=spec.image_size, seed=spec.train.seed)
    model = PlainModel.from_weights(get_weights(net))
    old = call_site(site, fn, labels, None, {"call": 1, "weights": model.vector})
    assert old.status == "ok", old.error
    assert isinstance(old.result["weights"], np.ndarray) and old.result["weights"].shape == model.vector.shape
    (name, shape), *rest = model.layout
    wrong = PlainModel(model.vector, ((f"{name}.renamed", shape), *rest))  # another model, same size
    refused = call_site(site, fn, labels, None, {"call": 2, "weights": wrong})  # sent in its wire form
    assert refused.status == "error" and refused.error.startswith("CodecError: the model's tensors do not")
    assert f"unexpected ['{name}.renamed']" in refused.error and "\n" not in refused.error
    assert ledger_states(federation["root"], "h1", spec.job_id, 2) == ["started", "refused"]
    right = call_site(site, fn, labels, None, {"call": 2, "weights": model})
    assert right.status == "ok", right.error
    back = codec.decode_update(right.result)
    assert isinstance(back, PlainModel) and back.layout == model.layout  # the current form, with layout


def test_custom_code_runs_only_when_the_site_policy_allows_it(federation: dict[str, Any],
                                                              tmp_path: Path) -> None:
    """Code that is not medsyft's template: refused at approval, and at execution even when
    approved through PySyft's own button; allowed only with the policy and the flag."""
    from support import login, owner_images, submit_code

    h2 = federation["sites"][1]
    password = (federation["root"] / "secrets" / "h2.txt").read_text()
    client = login(h2.url, "ds@lab.example", password)
    source = ("@sy.syft_function_single_use(images=asset)\n"
              "def image_count(images):\n    return len(images)\n")
    request = submit_code(client, source, dataset="chest", function="image_count", tmp=tmp_path)
    rid, data_dir = str(request.id), str(h2.data_dir.path)
    refused = run_cli("domain", "approve", "--data-dir", data_dir, rid)
    assert refused.code == 2 and refused.err.count("\n") == 1
    assert "not medsyft's own job or release code" in refused.err
    review = run_cli("domain", "review", "--data-dir", data_dir, rid)
    assert "CUSTOM CODE" in review.out and "ARBITRARY" in review.out
    # The owner presses PySyft's own approve button: the datasite still refuses to run it.
    from domains.site.connection import admin_client, quiet

    with quiet():
        admin = admin_client(h2.data_dir)
        next(r for r in admin.requests if str(r.id) == rid).approve(disable_warnings=True)
        with pytest.raises(Exception, match=r"medsyft site policy: .*custom code"):
            client.code.image_count(images=client.datasets["chest"].assets["images"])
    flag_only = run_cli("domain", "approve", "--data-dir", data_dir, rid, "--allow-custom-code")
    assert flag_only.code == 2 and "does not allow custom code" in flag_only.err
    assert run_cli("domain", "policy", "--data-dir", data_dir, "--allow-custom-code", "on").code == 0
    assert run_cli("domain", "approve", "--data-dir", data_dir, rid, "--allow-custom-code").code == 0
    with quiet():
        ran = client.code.image_count(images=client.datasets["chest"].assets["images"]).get()
    assert ran == len(owner_images(h2, "chest"))  # it ran on the private asset
    assert run_cli("domain", "policy", "--data-dir", data_dir, "--allow-custom-code", "off").code == 0
    with quiet(), pytest.raises(Exception, match="medsyft site policy"):
        client.code.image_count(images=client.datasets["chest"].assets["images"])


def test_the_model_card_says_what_ran_not_what_job_toml_says_now(federation: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    """The card is written from the run's records; the config is edited after the run, and a card
    written again from the edited config still describes the job the owners approved."""
    from support import save_image

    from domains import generate_chest_phantoms
    from domains.shared.spec import JobSpec
    from orchestrator import FederatedJob, load_config

    job = new_job(federation, "card", rounds=2, lr=0.002)
    job.submit()
    approve_all(federation["sites"])
    job.wait_for_approval(timeout=30)
    result = job.run(progress=False)
    folder = job.run_dir.path / "release"
    card = json.loads((folder / "model_card.json").read_text())
    spec = job.state().spec
    assert JobSpec.from_dict(card["spec"]) == spec and card["job_id"] == spec.job_id
    assert card["model"]["architecture"] == "small-cnn"
    assert card["model"]["label_names"] == ["normal", "pneumonia"]
    assert card["model"]["parameters"] == sum(a.size for a in result.weights.values())
    assert card["training"]["rounds_completed"] == 2 and card["training"]["local"]["lr"] == 0.002
    assert card["training"]["strategy"]["name"] == "FedAvg"
    shown = {site.config.name: site.status().datasets.set_index("dataset").loc["chest"]
             for site in federation["sites"]}
    assert {d["site"]: d["images"] for d in card["data"]} == {n: int(m["images"]) for n, m in shown.items()}
    final = result.metrics[result.metrics["model_round"] == 2].set_index("site")
    pooled = card["results"]["validation"]["pooled"]
    assert pooled["accuracy"] == pytest.approx(final.loc["pooled", "accuracy"])
    approvals = {a["site"]: a for a in card["approvals"]}
    records = {s.config.name: s.requests().set_index("id") for s in federation["sites"]}
    for sub in job.state().submissions:
        assert approvals[sub.site]["status"] == "approved" and approvals[sub.site]["decided_at"]
        assert records[sub.site].loc[sub.request_id, "status"] == "approved"
    assert card["privacy"] == {"dp": False, "he": False} and "test" in card["results"]
    markdown = (folder / "model_card.md").read_text()
    assert "## Approvals" in markdown and "small-cnn" in markdown and "differential privacy: OFF" in markdown

    edited = federation["root"] / "card.toml"
    text = edited.read_text()
    edited.write_text(text.replace("rounds = 2", "rounds = 5").replace("lr = 0.002", "lr = 0.1"))
    again = FederatedJob(load_config(edited))
    again.write_model_card(again.result())
    rewritten = json.loads((folder / "model_card.json").read_text())
    assert again.config.rounds == 5  # the config says otherwise now...
    assert rewritten["training"]["rounds"] == 2  # ...not the card
    assert rewritten["training"]["local"]["lr"] == 0.002

    images = tmp_path / "new-patients"
    for i, image in enumerate(generate_chest_phantoms(4, image_size=28, seed=9).images):
        save_image(images / f"p{i}.png", image[0])
    predicted = run_cli("predict", "--model", str(folder), "--images", str(images), "--csv",
                        str(tmp_path / "p.csv"))
    assert predicted.code == 0, predicted.err
    assert len(pd.read_csv(tmp_path / "p.csv")) == 4


@pytest.mark.parametrize("backend", ["mlflow", "tensorboard"])
def test_rounds_are_logged_to_the_tracker_and_read_back(federation: dict[str, Any], backend: str) -> None:
    """``[tracking]``: each evaluated model's metrics, read back from MLflow's store or TensorBoard's
    event files, are the run's own ``metrics.csv``."""
    from orchestrator import FederatedJob, load_config

    path = write_config(federation, f"tracked-{backend}", rounds=2)
    path.write_text(path.read_text() + f'\n[tracking]\nbackend = "{backend}"\nexperiment = "chest-tests"\n')
    job = FederatedJob(load_config(path))
    job.submit()
    approve_all(federation["sites"])
    job.wait_for_approval(timeout=30)
    result = job.run(progress=False)
    pooled = result.pooled()["accuracy"]
    state = json.loads((job.run_dir.path / "tracking.json").read_text())
    assert state["logged_round"] == 2 and state["finished"]
    if backend == "mlflow":
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=state["uri"])
        history = client.get_metric_history(state["run_id"], "pooled/accuracy")
        assert {m.step: m.value for m in history} == pytest.approx(pooled.to_dict())
        run = client.get_run(state["run_id"])
        assert run.data.params["rounds"] == "2" and run.info.status == "FINISHED"
        assert {f"{s}/auc" for s in NAMES} <= set(run.data.metrics) and "update_bytes" in run.data.metrics
    else:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(state["log_dir"])
        events.Reload()
        logged = {e.step: e.value for e in events.Scalars("accuracy/pooled")}
        assert logged == pytest.approx(pooled.to_dict())
        assert {f"auc/{s}" for s in NAMES} <= set(events.Tags()["scalars"])
    assert job.run(progress=False).pooled().equals(result.pooled())  # a finished run logs nothing twice
    assert json.loads((job.run_dir.path / "tracking.json").read_text())["logged_round"] == 2
