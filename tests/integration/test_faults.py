"""Faults with nothing lost: processes killed with SIGKILL, restarts, damaged files.

Three real datasite processes on 127.0.0.1 run DP-SGD jobs with encrypted aggregation. In
every case the job finishes or stops cleanly, nothing stored is lost, and no ε is counted
twice or missed: each call is charged at most once and only calls that may have read
private data are charged. Nothing is mocked; the kills are real ``kill -9``s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import approve_all, deploy_sites

from domains.site.datadir import DataDir

pytestmark = pytest.mark.slow

COUNT = 900
NAMES = ("f1", "f2", "f3")


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from privacy.he import init_keys

    os.environ["MEDSYFT_TORCH_THREADS"] = "1"
    root = tmp_path_factory.mktemp("faults")
    secret, public, _ = init_keys(root / "keys")
    sites = deploy_sites(root, NAMES, he_key=secret)
    (root / "secrets").mkdir()
    for i, site in enumerate(sites, start=1):
        # A budget for every fault job of this module together (each needs about ε = 5).
        site.publish(name="chest", shard=f"{i}/3", partition="iid", seed=0, synthetic_count=COUNT,
                     epsilon_budget=100.0)
        (root / "secrets" / f"{site.config.name}.txt").write_text(site.add_scientist("ds@lab.example"))
    yield {"root": root, "sites": {s.config.name: s for s in sites}, "public": public}
    for site in sites:
        site.stop()


def write_config(fed: dict[str, Any], run: str, rounds: int = 3) -> Path:
    lines = ["[job]", 'dataset = "chest"', 'model = "small-cnn"', f"rounds = {rounds}", "local_epochs = 1",
             "batch_size = 64", "lr = 0.01", "min_sites = 2", "round_timeout = 120",
             "approval_timeout = 60", f'run_dir = "{run}"', "", "[privacy]", "noise_multiplier = 1.2",
             f'he_public_key = "{fed["public"]}"']
    for name, site in fed["sites"].items():
        lines += ["", "[[sites]]", f'name = "{name}"', f'url = "{site.url}"', 'email = "ds@lab.example"',
                  f'password_file = "secrets/{name}.txt"']
    path = fed["root"] / f"{run}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def submitted_and_approved(fed: dict[str, Any], run: str, rounds: int = 3) -> Any:
    from orchestrator import FederatedJob, load_config

    job = FederatedJob(load_config(write_config(fed, run, rounds)))
    job.submit()
    approve_all(list(fed["sites"].values()))
    return job


def ledger(site: Any, job_id: str) -> list[tuple[int, str]]:
    path = site.data_dir.jobs_dir / job_id / "ledger.jsonl"
    return [(e["call"], e["state"]) for e in map(json.loads, path.read_text().splitlines())]


def charged_calls(site: Any, job_id: str) -> dict[int, float]:
    """Each charged call of the job on the site's ε ledger (one entry per call, by construction)."""
    raw = json.loads((site.data_dir.path / "privacy" / "chest.json").read_text())
    return {int(c): v for c, v in raw["jobs"][job_id]["charges"].items()}


def wait_for(predicate: Any, timeout: float = 300.0, poll: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition never became true")
        time.sleep(poll)


def started(site: Any, job_id: str, call: int) -> bool:
    path = site.data_dir.jobs_dir / job_id / "ledger.jsonl"
    return path.exists() and (call, "started") in ledger(site, job_id)


def redeploy(site: Any) -> None:
    from domains import Datasite
    Datasite.deploy(site.data_dir.path, name=None, port=int(site.url.rsplit(":", 1)[1]))


def test_datasite_killed_mid_round_is_redeployed_and_rejoins(federation: dict[str, Any]) -> None:
    job = submitted_and_approved(federation, "kill-site")
    spec, f3 = job.state().spec, federation["sites"]["f3"]

    def kill_during_call_2() -> None:
        wait_for(lambda: started(f3, spec.job_id, 2))
        os.kill(int((f3.data_dir.path / "datasite.pid").read_text().split()[0]), signal.SIGKILL)

    killer = threading.Thread(target=kill_during_call_2, daemon=True)
    killer.start()

    def after_round(_: Any) -> None:
        if job.state().completed_round == 2:  # f3 was skipped in round 2; it comes back for round 3
            redeploy(f3)

    result = job.run(progress=False, on_round=after_round)
    killer.join(5)
    status = result.history.set_index(["round", "site"])["status"]
    assert status[(2, "f3")] != "ok" and status[(3, "f3")] == "ok"
    assert (result.history[result.history["site"] != "f3"]["status"] == "ok").all()
    entries = ledger(f3, spec.job_id)
    assert (2, "started") in entries and (2, "done") not in entries and (2, "failed") not in entries
    assert [c for c, s in entries if s == "done"] == [1, 3, 4]  # call 2 never ran again
    charged = charged_calls(f3, spec.job_id)
    assert {1, 3, 4} <= set(charged) <= {1, 2, 3, 4}  # the interrupted call at most once, no call twice
    assert set(charged_calls(federation["sites"]["f1"], spec.job_id)) == {1, 2, 3, 4}


def test_orchestrator_killed_mid_round_resumes_with_every_call_once(federation: dict[str, Any]) -> None:
    job = submitted_and_approved(federation, "kill-orchestrator")
    spec, config = job.state().spec, str(federation["root"] / "kill-orchestrator.toml")
    f1 = federation["sites"]["f1"]
    command = [str(Path(sys.executable).with_name("medsyft")), "train", "--config", config, "--quiet"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    orchestrator = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_for(lambda: started(f1, spec.job_id, 2), poll=0.02)
    finally:
        orchestrator.send_signal(signal.SIGKILL)
        orchestrator.wait(30)
    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming job {spec.job_id}" in resumed.stdout
    for site in federation["sites"].values():
        assert [c for c, s in ledger(site, spec.job_id) if s == "done"] == [1, 2, 3, 4]
        assert sorted(charged_calls(site, spec.job_id)) == [1, 2, 3, 4]
    assert job.state().finished


def test_datasite_restarted_between_approval_and_first_call(federation: dict[str, Any]) -> None:
    job = submitted_and_approved(federation, "restart-before", rounds=1)
    f2 = federation["sites"]["f2"]
    budget_before = (f2.data_dir.path / "privacy" / "chest.json").read_bytes()
    f2.stop()
    redeploy(f2)
    assert (f2.data_dir.path / "privacy" / "chest.json").read_bytes() == budget_before  # reservation kept
    result = job.run(progress=False)
    assert (result.history["status"] == "ok").all() and len(result.history) == 3


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_a_damaged_training_store_is_named_never_used(federation: dict[str, Any], damage: str,
                                                     tmp_path: Path) -> None:
    from orchestrator.transport import call_site

    f1 = federation["sites"]["f1"]
    store = f1.data_dir.datasets_dir / "chest.images.npy"
    backup = tmp_path / "chest.images.npy"
    shutil.copyfile(store, backup)
    job = submitted_and_approved(federation, f"damaged-{damage}", rounds=1)
    f1.stop()  # a running datasite holds the copy it loaded; the damage shows after a restart
    data = store.read_bytes()
    garbled = data[:200] + b"\0" * 64 + data[264:]
    store.write_bytes(data[: len(data) // 2] if damage == "truncate" else garbled)
    damaged = store.read_bytes()
    try:
        redeploy(f1)
        state, site = job.state(), next(s for s in job.sites if s.name == "f1")
        outcome = call_site(site, state.submissions[0].function, site.asset("chest", "labels"), None,
                            {"call": 1, "weights": None, "weight": 0.3})
        assert outcome.status == "error" and "StoreError" in outcome.error
        assert "training copy of 'chest'" in outcome.error and "damaged" in outcome.error
        assert store.read_bytes() == damaged  # named, never silently used or rewritten
        assert not (f1.data_dir.jobs_dir / state.spec.job_id / "call-1.npz").exists()
        assert not charged_calls(f1, state.spec.job_id)  # nothing charged: no private data was read
    finally:
        f1.stop()
        shutil.copyfile(backup, store)
        redeploy(f1)
    assert DataDir(f1.data_dir.path).is_initialized


@pytest.mark.parametrize("damaged", ["call ledger", "ε ledger"])
def test_a_damaged_ledger_on_a_running_datasite_is_named_never_reset(federation: dict[str, Any],
                                                                     damaged: str) -> None:
    """The call ledger and the ε ledger are read at every call: damage shows at once, by name."""
    from orchestrator.transport import call_site

    f2 = federation["sites"]["f2"]
    job = submitted_and_approved(federation, f"ledger-{damaged.split()[0]}", rounds=2)
    state, site = job.state(), next(s for s in job.sites if s.name == "f2")
    fn, labels = state.submissions[1].function, site.asset("chest", "labels")
    first = call_site(site, fn, labels, None, {"call": 1, "weights": None, "weight": 0.3})
    assert first.status == "ok", first.error
    path = (f2.data_dir.jobs_dir / state.spec.job_id / "ledger.jsonl" if damaged == "call ledger"
            else f2.data_dir.path / "privacy" / "chest.json")
    original = path.read_bytes()
    path.write_bytes(original[: len(original) - 7])  # a write cut short
    try:
        from privacy.he import EncryptedVector

        part = EncryptedVector.from_dict(first.result["weights"])
        model = job.he_context.aggregate([part, part])  # two contributions, as the job requires
        outcome = call_site(site, fn, labels, None, {"call": 2, "weights": model.to_dict(), "weight": 0.3})
        assert outcome.status == "error"
        expected = "CallLogCorrupt" if damaged == "call ledger" else "BudgetError"
        assert expected in outcome.error and path.name in outcome.error, outcome.error
        assert path.read_bytes() == original[: len(original) - 7]  # never reset or rewritten
        assert not (f2.data_dir.jobs_dir / state.spec.job_id / "call-2.npz").exists()
    finally:
        path.write_bytes(original)
