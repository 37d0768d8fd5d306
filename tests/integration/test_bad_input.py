"""Every bad input a user can cause: one line naming the problem, exit 2, nothing lost.

Each case runs the real ``medsyft`` command against a real datasite that already
holds a dataset; afterwards that dataset is still there, byte for byte, and no
other dataset appeared.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from support import (
    CliResult,
    free_port,
    owner_images,
    run_cli,
    run_cli_subprocess,
    write_dicom_folder,
    write_npz_bomb,
    write_png_folder,
    write_png_header,
)

pytestmark = pytest.mark.slow


def _assert_one_line_error(result: CliResult, *needles: str) -> None:
    assert result.code == 2, (result.code, result.out, result.err)
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture(scope="module")
def baseline(site: Any) -> dict[str, str]:
    site.publish(name="baseline", synthetic_count=30)
    return owner_images(site)


def _bad_sources(tmp: Path) -> list[tuple[str, list[str], list[str]]]:
    """(case, publish arguments, strings the error line must contain)."""
    truncated = write_png_folder(tmp / "trunc", {"a": [(32, 32)] * 2, "b": [(32, 32)] * 2})
    png = truncated / "b" / "1.png"
    png.write_bytes(png.read_bytes()[:60])

    not_dicom = write_dicom_folder(tmp / "notdcm", ["a", "b"])
    (not_dicom / "img1.dcm").write_text("this is a text file, not DICOM\n")

    missing = write_dicom_folder(tmp / "missing", ["a", "b"])
    with (missing / "labels.csv").open("a") as fh:
        fh.write("ghost.dcm,a\n")

    outside = write_dicom_folder(tmp / "outside", ["normal", "tumour"])

    mixed = write_png_folder(tmp / "mixed", {"a": [(32, 32), (32, 32)], "b": [(32, 32), (30, 96)]})

    empty = tmp / "empty"
    empty.mkdir()
    return [*_hostile_sources(tmp),
        ("truncated png", ["--source", str(truncated), "--format", "folder"], ["1.png"]),
        ("non-DICOM .dcm", ["--source", str(not_dicom), "--format", "dicom"], ["img1.dcm"]),
        ("labels.csv names missing file", ["--source", str(missing), "--format", "dicom"],
         ["ghost.dcm"]),
        ("label outside schema", ["--source", str(outside), "--format", "dicom",
                                  "--label-names", "normal,pneumonia"], ["tumour"]),
        ("mixed sizes", ["--source", str(mixed), "--format", "folder"], ["1.png"]),
        ("empty folder", ["--source", str(empty), "--format", "folder"], ["empty"]),
        ("unknown format", ["--source", str(empty), "--format", "tiff"], ["tiff"]),
        ("missing source", ["--source", str(tmp / "nope.npz")], ["nope.npz"]),
        ("shard 4/3", ["--shard", "4/3"], ["4/3"]),
        ("bad partition", ["--shard", "1/3", "--partition", "dirichlet:-1"], ["dirichlet"]),
        ("duplicate name", ["--name", "baseline", "--count", "10"], ["baseline"]),
    ]


def _hostile_sources(tmp: Path) -> list[tuple[str, list[str], list[str]]]:
    """Sources built to hurt the datasite's host: bombs, links out of the folder, odd labels."""
    declared = write_npz_bomb(tmp / "declared.npz", declared=64 << 30)  # a few KiB on disk
    zeros = write_npz_bomb(tmp / "zeros.npz", real=16 << 20)  # 16 MiB of zeros in ~16 KiB

    write_png_folder(tmp / "outside" / "b", {"x": [(32, 32)]})
    linked = write_png_folder(tmp / "linked", {"a": [(32, 32)] * 2})
    (linked / "b").symlink_to(tmp / "outside" / "b" / "x")

    escaping = write_dicom_folder(tmp / "escaping", ["a", "b"])
    with (escaping / "labels.csv").open("a") as fh:
        fh.write("../outside/secret.dcm,a\n")

    huge = write_png_folder(tmp / "huge", {"a": [(32, 32)] * 2, "b": [(32, 32)]})
    write_png_header(huge / "b" / "huge.png", 15000, 15000)
    plain = write_png_folder(tmp / "plain", {"a": [(32, 32)], "b": [(32, 32)]})
    uncertain = write_dicom_folder(tmp / "uncertain", ["0", "-1", "0", "-1"])
    return [
        ("npz declaring 64 GiB", ["--source", str(declared)],
         ["declared.npz", "64.0 GiB", "before expanding"]),
        ("npz of zeros", ["--source", str(zeros)], ["zeros.npz", "expands", "--max-npz-ratio"]),
        ("npz over a lowered limit", ["--source", str(zeros), "--max-npz-ratio", "2000",
                                      "--max-npz-bytes", "8M"], ["zeros.npz", "above the limit of 8.0 MiB"]),
        ("class folder linked outside", ["--source", str(linked)],
         ["linked/b", "resolves outside the source"]),
        ("labels.csv row ../", ["--source", str(escaping)], ["secret.dcm", "points outside the source"]),
        ("Pillow decompression bomb", ["--source", str(huge)], ["huge.png", "225,000,000 pixels"]),
        ("--max-pixels", ["--source", str(plain), "--max-pixels", "1000"], ["32x32", "--max-pixels"]),
        ("label -1 beside 0", ["--source", str(uncertain)], ["'-1'", "--label-names=-1:NAME,0:NAME"]),
        ("--label-names mixing forms", ["--label-names", "a,1:b"], ["--label-names", "mixes"]),
        ("--max-npz-bytes not a size", ["--max-npz-bytes", "lots"], ["--max-npz-bytes", "8G"]),
    ]


def test_bad_publish_inputs_are_refused_and_lose_nothing(
    site: Any, baseline: dict[str, str], tmp_path: Path
) -> None:
    for case, args, needles in _bad_sources(tmp_path):
        result = run_cli("domain", "publish", "--data-dir", str(site.data_dir.path), *args)
        try:
            _assert_one_line_error(result, *needles)
        except AssertionError as exc:
            raise AssertionError(f"case {case!r}: {exc}") from exc
    after = owner_images(site)
    assert {k: after[k] for k in baseline} == baseline  # every earlier dataset intact
    assert set(after) == set(baseline)  # and nothing half published


def test_label_minus_one_is_published_once_named(site: Any, baseline: dict[str, str],
                                                 tmp_path: Path) -> None:
    source = write_dicom_folder(tmp_path / "cxr", ["0", "-1", "1", "-1"])
    before = owner_images(site)
    args = ["domain", "publish", "--data-dir", str(site.data_dir.path), "--source", str(source),
            "--name", "cxr-uncertain"]
    _assert_one_line_error(run_cli(*args), "'-1'", "--label-names=-1:NAME,0:NAME,1:NAME")
    assert owner_images(site) == before
    result = run_cli(*args, "--label-names=-1:uncertain,0:normal,1:pneumonia")
    assert result.code == 0, result.err
    assert "(uncertain: 2, normal: 1, pneumonia: 1)" in result.out
    assert set(owner_images(site)) == set(before) | {"cxr-uncertain"}


def test_console_script_error_is_one_line(site: Any, baseline: dict[str, str]) -> None:
    result = run_cli_subprocess("domain", "publish", "--data-dir", str(site.data_dir.path),
                                "--shard", "0/3")
    _assert_one_line_error(result, "0/3")


def test_deploy_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("domain", "deploy", "--data-dir", str(tmp_path / "x"), "--name", "x",
                         "--port", str(port))
    _assert_one_line_error(result, str(port), "in use")
    assert not (tmp_path / "x" / "medsyft.json").exists()


def test_deploy_data_dir_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where a directory should be")
    result = run_cli("domain", "deploy", "--data-dir", str(blocker / "site"), "--name", "x",
                     "--port", str(free_port()))
    _assert_one_line_error(result, "not writable")


def test_deploy_read_only_dir_as_non_root(tmp_path: Path) -> None:
    import os

    if os.geteuid() == 0:
        pytest.skip("root can write into a 0500 directory; covered by the not-a-directory case")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    result = run_cli("domain", "deploy", "--data-dir", str(ro / "site"), "--name", "x",
                     "--port", str(free_port()))
    _assert_one_line_error(result, "not writable")


def test_commands_on_a_stopped_datasite(tmp_path: Path) -> None:
    from domains.site.datadir import DataDir
    from domains.site.lifecycle import initialize

    data_dir = DataDir(tmp_path / "down")
    initialize(data_dir, name="down", host="127.0.0.1", port=free_port())
    for args in (["publish", "--count", "5"], ["requests"], ["approve", "abc"],
                 ["add-scientist", "--email", "a@b.example"]):
        result = run_cli("domain", *args, "--data-dir", str(data_dir.path))
        _assert_one_line_error(result, "not running", "deploy")


def test_not_a_data_dir(tmp_path: Path) -> None:
    result = run_cli("domain", "status", "--data-dir", str(tmp_path))
    _assert_one_line_error(result, "not a medsyft datasite")


def test_unknown_request_id(site: Any) -> None:
    result = run_cli("domain", "approve", "ffffffffffff", "--data-dir", str(site.data_dir.path))
    _assert_one_line_error(result, "ffffffffffff")
