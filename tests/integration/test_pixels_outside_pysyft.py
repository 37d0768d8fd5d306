"""``--pysyft-images mock-only`` on real datasite processes: PySyft holds the labels and a mock
sample but no private pixel, the training store holds every pixel, a medsyft job trains on it all
the same, custom code bound to the missing pixels is refused at approval, and ``auto`` keeps small
sets whole in PySyft. Nothing is mocked."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import approve_all, deploy_sites, login, run_cli, submit_code, write_job_toml

pytestmark = pytest.mark.slow

NAMES = ("px1", "px2")
COUNT = 800  # 400 images a site: above the mock sample, so the sample is visibly a sample


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    os.environ["MEDSYFT_TORCH_THREADS"] = "1"
    root = tmp_path_factory.mktemp("pixels")
    sites = deploy_sites(root, NAMES)
    (root / "secrets").mkdir()
    for i, site in enumerate(sites, start=1):
        shown = run_cli("domain", "publish", "--data-dir", str(site.data_dir.path), "--name", "chest",
                        "--count", str(COUNT), "--shard", f"{i}/2", "--pysyft-images", "mock-only")
        assert shown.code == 0 and "pixels in the training store only" in shown.out, shown.err
        (root / "secrets" / f"{site.config.name}.txt").write_text(site.add_scientist("ds@lab.example"))
    yield {"root": root, "sites": sites}
    for site in sites:
        site.stop()


def test_pysyft_holds_no_private_pixel_and_the_store_holds_them_all(federation: dict[str, Any]) -> None:
    from domains.data import store
    from domains.data.metadata import parse_metadata
    from domains.data.partition import ShardSpec, parse_partition, shard
    from domains.data.publish import MOCK_SAMPLE, PublishRequest
    from domains.data.publish import load_images as source_images
    from domains.site.connection import admin_client, quiet

    full = source_images(PublishRequest(synthetic_count=COUNT))
    for i, site in enumerate(federation["sites"], start=1):
        idx = shard(full.labels, ShardSpec(i, 2), parse_partition("iid"), seed=0)
        with quiet():
            dataset = admin_client(site.data_dir).datasets["chest"]
            images, labels = dataset.assets["images"], dataset.assets["labels"]
            private, mock = np.asarray(images.data), np.asarray(images.mock)
            assert private.shape == (0, 1, 28, 28)  # the owner's own view: no pixel in PySyft
            assert tuple(images.shape) == (len(idx), 1, 28, 28)  # the real shape, for outsiders too
            assert mock.shape == (min(MOCK_SAMPLE, len(idx)), 1, 28, 28)
            assert np.array_equal(np.asarray(labels.data), full.labels[idx])  # the jobs' input, whole
        assert parse_metadata(dataset.description)["pysyft_images"] == "mock-only"
        stored = store.load(site.data_dir, "chest")
        assert np.array_equal(stored.images, full.images[idx])
        status = run_cli("domain", "status", "--data-dir", str(site.data_dir.path))
        assert status.code == 0 and str(len(idx)) in status.out and "1x28x28" in status.out, status.out


def test_a_job_trains_on_the_training_store_alone(federation: dict[str, Any]) -> None:
    from orchestrator import FederatedJob, load_config

    settings = {"dataset": "chest", "model": "small-cnn", "rounds": 2, "local_epochs": 1,
                "batch_size": 32, "lr": 0.001, "min_sites": 2, "round_timeout": 120,
                "approval_timeout": 30, "run_dir": "pixels"}
    lines = ["[job]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines += ["", "[privacy]", "dp = true", "he = false"]
    job = FederatedJob(load_config(write_job_toml(federation["root"], "pixels", federation["sites"], lines)))
    job.submit()
    approve_all(federation["sites"])
    job.wait_for_approval(timeout=30)
    result = job.run(progress=False)
    assert (result.history["status"] == "ok").all() and len(result.history) == 2 * len(NAMES)
    assert (result.history["n_train"] > 0).all()
    assert (result.epsilon()["job_epsilon_spent"] > 0).all()


def test_custom_code_on_the_missing_pixels_is_refused_at_approval(federation: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    site = federation["sites"][0]
    data_dir = str(site.data_dir.path)
    password = (federation["root"] / "secrets" / f"{site.config.name}.txt").read_text()
    client = login(site.url, "ds@lab.example", password)
    source = ("@sy.syft_function_single_use(images=asset)\n"
              "def pixel_sum(images):\n    return int(images.sum())\n")
    request = submit_code(client, source, dataset="chest", function="pixel_sum", tmp=tmp_path)
    assert run_cli("domain", "policy", "--data-dir", data_dir, "--allow-custom-code", "on").code == 0
    try:
        refused = run_cli("domain", "approve", "--data-dir", data_dir, str(request.id), "--allow-custom-code")
    finally:
        run_cli("domain", "policy", "--data-dir", data_dir, "--allow-custom-code", "off")
    assert refused.code == 2 and refused.err.count("\n") == 1, refused.err
    assert "reads the images of 'chest', which PySyft does not hold" in refused.err
    assert "--pysyft-images full" in refused.err
    assert "pending" in run_cli("domain", "requests", "--data-dir", data_dir).out  # nothing changed


def test_auto_keeps_a_small_set_whole_in_pysyft(federation: dict[str, Any]) -> None:
    from domains.data.metadata import parse_metadata
    from domains.site.connection import admin_client, quiet

    site = federation["sites"][1]
    result = site.publish(name="small", synthetic_count=50)
    assert result.metadata["pysyft_images"] == "full"
    with quiet():
        dataset = admin_client(site.data_dir).datasets["small"]
        assert np.asarray(dataset.assets["images"].data).shape == (50, 1, 28, 28)
        assert np.asarray(dataset.assets["images"].mock).shape == (50, 1, 28, 28)
    assert parse_metadata(dataset.description)["pysyft_images"] == "full"
