"""DICOM folder + labels.csv loading: display pipeline, modality and label checks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from domains.data.formats import SourceLimits, detect_format, load_source
from domains.errors import PublishError

SaveDicom = Callable[..., Path]
WriteLabels = Callable[[Path, list[tuple[str, str]]], Path]


def _ramp(h: int = 16, w: int = 16, top: int = 4095) -> np.ndarray:
    return np.linspace(0, top, h * w).reshape(h, w).astype(np.uint16)


@pytest.fixture
def study(tmp_path: Path, save_dicom: SaveDicom, write_labels: WriteLabels) -> Path:
    root = tmp_path / "study"
    for i in range(4):
        save_dicom(root / f"img{i}.dcm", _ramp())
    write_labels(root, [("img0.dcm", "pneumonia"), ("img1.dcm", "normal"),
                        ("img2.dcm", "normal"), ("img3.dcm", "pneumonia")])  # fmt: skip
    return root


def test_dicom_folder_loads_with_sorted_schema(study: Path) -> None:
    s = load_source(study)
    assert detect_format(study) == "dicom"
    assert s.images.shape == (4, 1, 16, 16) and s.images.dtype == np.uint8
    assert s.label_names == ["normal", "pneumonia"]
    assert s.labels.tolist() == [1, 0, 0, 1]
    assert s.modality == "CR"
    assert s.images[0].min() == 0 and s.images[0].max() == 255  # no window: min-max


def test_dicom_mixed_modalities_listed(
    tmp_path: Path, save_dicom: SaveDicom, write_labels: WriteLabels
) -> None:
    save_dicom(tmp_path / "a.dcm", _ramp(), modality="DX")
    save_dicom(tmp_path / "b.dcm", _ramp(), modality="CR")
    write_labels(tmp_path, [("a.dcm", "x"), ("b.dcm", "y")])
    assert load_source(tmp_path).modality == "CR, DX"


def test_dicom_window_rescale_and_monochrome1(
    tmp_path: Path, save_dicom: SaveDicom, write_labels: WriteLabels
) -> None:
    pixels = np.array([[0, 100, 200, 300]] * 8, dtype=np.uint16).repeat(2, axis=1)
    # stored 0..300 -> slope 2, intercept -100 -> -100..500; window [0, 400] (c=200.5, w=401)
    common = {"RescaleSlope": 2, "RescaleIntercept": -100, "WindowCenter": 200.5,
              "WindowWidth": 401}  # fmt: skip
    save_dicom(tmp_path / "m2.dcm", pixels, **common)
    save_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1", **common)
    write_labels(tmp_path, [("m1.dcm", "a"), ("m2.dcm", "a")])
    s = load_source(tmp_path)
    m1, m2 = s.images[0, 0, 0, ::2], s.images[1, 0, 0, ::2]
    assert m2.tolist() == [0, 64, 191, 255]  # -100 clipped, 100 -> 1/4, 300 -> 3/4, 500 clipped
    assert m1.tolist() == [255, 191, 64, 0]


def test_dicom_multi_valued_window_uses_first(
    tmp_path: Path, save_dicom: SaveDicom, write_labels: WriteLabels
) -> None:
    save_dicom(tmp_path / "w.dcm", _ramp(top=1000), WindowCenter=[500, 40], WindowWidth=[1001, 80])
    write_labels(tmp_path, [("w.dcm", "a")])
    img = load_source(tmp_path).images[0, 0]
    assert img.min() == 0 and img.max() == 255 and 100 < img.mean() < 155


def test_dicom_integer_labels_index_the_schema(study: Path, write_labels: WriteLabels) -> None:
    write_labels(study, [("img0.dcm", "1"), ("img1.dcm", "0"), ("img2.dcm", "normal"),
                         ("img3.dcm", "1")])  # fmt: skip
    s = load_source(study, label_names=["normal", "pneumonia"])
    assert s.labels.tolist() == [1, 0, 0, 1]


def test_dicom_numeric_labels_are_class_indices(
    tmp_path: Path, save_dicom: SaveDicom, write_labels: WriteLabels
) -> None:
    for i in range(11):
        save_dicom(tmp_path / f"img{i:02d}.dcm", _ramp())
    write_labels(tmp_path, [(f"img{i:02d}.dcm", str(10 - i)) for i in range(11)])
    s = load_source(tmp_path)
    assert s.label_names == [str(i) for i in range(11)]  # "10" after "9", not after "1"
    assert s.labels.tolist() == list(range(10, -1, -1))


def test_dicom_numeric_labels_not_indices_refused(study: Path, write_labels: WriteLabels) -> None:
    write_labels(study, [("img0.dcm", "10"), ("img1.dcm", "9"), ("img2.dcm", "9"),
                         ("img3.dcm", "2")])  # fmt: skip
    with pytest.raises(PublishError, match=r"img3\.dcm: label '2' is not a class index: numeric labels "
                       r"must be 0\.\.2 .*--label-names=2:NAME,9:NAME,10:NAME"):
        load_source(study)


def test_dicom_minus_one_is_not_a_class_name(study: Path, write_labels: WriteLabels) -> None:
    write_labels(study, [("img0.dcm", "0"), ("img1.dcm", "-1"), ("img2.dcm", "0"),
                         ("img3.dcm", "-1")])  # fmt: skip
    with pytest.raises(PublishError, match=r"img1\.dcm: label '-1' is not a class index.*uncertain"):
        load_source(study)
    s = load_source(study, label_names={"0": "normal", "-1": "uncertain"})
    assert s.label_names == ["normal", "uncertain"] and s.labels.tolist() == [0, 1, 0, 1]


def test_dicom_mapping_of_text_labels(study: Path, write_labels: WriteLabels) -> None:
    write_labels(study, [("img0.dcm", "PNEU"), ("img1.dcm", "NORM"), ("img2.dcm", "NORM"),
                         ("img3.dcm", "UNSURE")])  # fmt: skip
    mapping = {"NORM": "normal", "PNEU": "pneumonia", "UNSURE": "pneumonia"}
    s = load_source(study, label_names=mapping)
    assert s.label_names == ["normal", "pneumonia"] and s.labels.tolist() == [1, 0, 0, 1]
    with pytest.raises(PublishError, match=r"img3\.dcm: label 'UNSURE' is not named by --label-names"):
        load_source(study, label_names={"NORM": "normal", "PNEU": "pneumonia"})


@pytest.mark.parametrize("name", ["../outside.dcm", "/tmp/outside.dcm", "sub/../../outside.dcm",
                                  "C:\\scans\\outside.dcm"])
def test_dicom_labels_csv_path_outside_refused(
    study: Path, write_labels: WriteLabels, save_dicom: SaveDicom, name: str
) -> None:
    save_dicom(study.parent / "outside.dcm", _ramp())
    rows = [(f"img{i}.dcm", "a") for i in range(4)]
    write_labels(study, [*rows, (name, "b")])
    with pytest.raises(PublishError, match=r"labels\.csv:6 .* points outside the source folder"):
        load_source(study)


def test_dicom_labels_csv_path_normalized_inside(study: Path, write_labels: WriteLabels) -> None:
    write_labels(study, [("./img0.dcm", "a"), ("sub/../img1.dcm", "a"), ("img2.dcm", "b"),
                         ("img3.dcm", "b")])  # fmt: skip
    assert load_source(study).class_counts() == {"a": 2, "b": 2}


def test_dicom_linked_file_outside_refused(
    study: Path, save_dicom: SaveDicom, write_labels: WriteLabels
) -> None:
    outside = save_dicom(study.parent / "other-study" / "x.dcm", _ramp())
    (study / "img4.dcm").symlink_to(outside)
    write_labels(study, [(f"img{i}.dcm", "a") for i in range(5)])
    with pytest.raises(PublishError, match=r"img4\.dcm: resolves outside the source folder"):
        load_source(study)


def test_dicom_linked_labels_csv_outside_refused(study: Path) -> None:
    elsewhere = study.parent / "labels-elsewhere.csv"
    (study / "labels.csv").rename(elsewhere)
    (study / "labels.csv").symlink_to(elsewhere)
    with pytest.raises(PublishError, match=r"labels\.csv: resolves outside the source folder"):
        load_source(study)


def test_dicom_rows_columns_checked_before_decoding(
    tmp_path: Path, save_dicom: SaveDicom, write_labels: WriteLabels
) -> None:
    save_dicom(tmp_path / "claims.dcm", _ramp(), Rows=20000, Columns=20000)  # 16x16 pixels stored
    write_labels(tmp_path, [("claims.dcm", "a")])
    with pytest.raises(PublishError, match=r"claims\.dcm: image is 20000x20000 px \(400,000,000 pixels\)"
                       r", above the limit of 67,108,864 pixels; refused before decoding"):
        load_source(tmp_path)
    (tmp_path / "claims.dcm").unlink()
    save_dicom(tmp_path / "claims.dcm", _ramp())
    with pytest.raises(PublishError, match=r"claims\.dcm: image is 16x16 px .*--max-pixels"):
        load_source(tmp_path, limits=SourceLimits(max_pixels=100))
    assert len(load_source(tmp_path, limits=SourceLimits(max_pixels=256))) == 1


def test_dicom_text_file_named_dcm(study: Path) -> None:
    (study / "img2.dcm").write_text("patient list, not an image")
    with pytest.raises(PublishError, match=r"img2\.dcm: not a readable DICOM file"):
        load_source(study)


def test_dicom_labels_name_missing_file(study: Path, write_labels: WriteLabels) -> None:
    write_labels(study, [("img0.dcm", "a"), ("img1.dcm", "a"), ("img2.dcm", "a"),
                         ("img3.dcm", "a"), ("ghost.dcm", "b")])  # fmt: skip
    with pytest.raises(PublishError, match=r"ghost\.dcm: named in labels\.csv line 6"):
        load_source(study)


def test_dicom_file_without_label_row(study: Path, write_labels: WriteLabels) -> None:
    write_labels(study, [("img0.dcm", "a"), ("img1.dcm", "a"), ("img3.dcm", "a")])
    with pytest.raises(PublishError, match=r"img2\.dcm: has no row in labels\.csv"):
        load_source(study)


def test_dicom_duplicate_label_row(study: Path, write_labels: WriteLabels) -> None:
    write_labels(study, [("img0.dcm", "a"), ("img1.dcm", "a"), ("img2.dcm", "a"),
                         ("img3.dcm", "a"), ("img1.dcm", "b")])  # fmt: skip
    with pytest.raises(PublishError, match=r"labels\.csv:6 \(img1\.dcm\).*listed twice"):
        load_source(study)


def test_dicom_empty_label(study: Path, write_labels: WriteLabels) -> None:
    write_labels(study, [("img0.dcm", "a"), ("img1.dcm", ""), ("img2.dcm", "a"),
                         ("img3.dcm", "a")])  # fmt: skip
    with pytest.raises(PublishError, match=r"img1\.dcm.*empty label"):
        load_source(study)


def test_dicom_label_outside_schema(study: Path) -> None:
    with pytest.raises(PublishError, match=r"img0\.dcm: label 'pneumonia' is not in the schema") \
            as err:
        load_source(study, label_names=["normal", "covid"])
    assert "['normal', 'covid']" in str(err.value)


def test_dicom_index_outside_schema(study: Path, write_labels: WriteLabels) -> None:
    write_labels(study, [(f"img{i}.dcm", str(i)) for i in range(4)])
    with pytest.raises(PublishError, match=r"img2\.dcm: label '2' is not in the schema"):
        load_source(study, label_names=["normal", "pneumonia"])


def test_dicom_missing_labels_csv(study: Path) -> None:
    (study / "labels.csv").unlink()
    with pytest.raises(PublishError, match=r"labels\.csv: missing"):
        load_source(study)


def test_dicom_bad_header(study: Path) -> None:
    (study / "labels.csv").write_text("filename,diagnosis\nimg0.dcm,a\n")
    with pytest.raises(PublishError, match=r"labels\.csv: header"):
        load_source(study)


def test_dicom_multi_frame_refused(
    tmp_path: Path, save_dicom: SaveDicom, write_labels: WriteLabels
) -> None:
    save_dicom(tmp_path / "cine.dcm", np.zeros((3, 16, 16), np.uint16))
    write_labels(tmp_path, [("cine.dcm", "a")])
    with pytest.raises(PublishError, match=r"cine\.dcm: multi-frame DICOM \(3 frames\)"):
        load_source(tmp_path)


def test_dicom_colour_and_size_harmonized(
    tmp_path: Path, save_dicom: SaveDicom, write_labels: WriteLabels
) -> None:
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 2] = 255
    save_dicom(tmp_path / "derm.dcm", rgb, modality="XC")
    save_dicom(tmp_path / "grey.dcm", _ramp(16, 16), modality="XC")
    write_labels(tmp_path, [("derm.dcm", "a"), ("grey.dcm", "b")])
    s = load_source(tmp_path, image_size=32)
    assert s.images.shape == (2, 3, 32, 32)
    assert np.all(s.images[0, 2] == 255) and np.all(s.images[0, 0] == 0)


def test_dicom_labels_csv_not_text(study: Path) -> None:
    (study / "labels.csv").write_bytes(b"file,label\n\xff\xfe\x00garbage\n")
    with pytest.raises(PublishError, match=r"labels\.csv: not a UTF-8 CSV"):
        load_source(study)


def test_dicom_truncated_file(study: Path) -> None:
    data = (study / "img1.dcm").read_bytes()
    (study / "img1.dcm").write_bytes(data[: len(data) - 100])
    with pytest.raises(PublishError, match=r"img1\.dcm: (not a readable|cannot decode)"):
        load_source(study)
