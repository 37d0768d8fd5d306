"""MedMNIST-style npz loading, the ImageSet contract and the format registry."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import write_npz_bomb

from domains.data.formats import (
    FORMATS,
    ImageSet,
    SourceLimits,
    detect_format,
    load_source,
    register_format,
)
from domains.data.formats.medmnist_info import MEDMNIST_2D, lookup
from domains.errors import PublishError


def _npz(path: Path, rng: np.random.Generator, n: int = 12, **extra: np.ndarray) -> Path:
    arrays = {
        "train_images": rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 2, (n, 1), dtype=np.uint8),
    }
    arrays.update(extra)
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def test_load_source_pneumoniamnist_train(pneumoniamnist: Path) -> None:
    start = time.perf_counter()
    s = load_source(pneumoniamnist)
    elapsed = time.perf_counter() - start
    assert s.images.shape == (3882, 1, 28, 28)
    assert s.images.dtype == np.uint8 and s.labels.dtype == np.int64
    assert s.label_names == ["normal", "pneumonia"]
    assert s.class_counts() == {"normal": 388, "pneumonia": 3494}
    assert s.modality == "chest X-ray" and not s.synthetic and not s.multi_label
    assert elapsed < 5, f"loading 3882 images took {elapsed:.1f} s"


def test_load_source_pneumoniamnist_test_split(pneumoniamnist: Path) -> None:
    s = load_source(pneumoniamnist, split="test")
    assert s.class_counts() == {"normal": 234, "pneumonia": 390}
    assert "[test]" in s.source


def test_npz_chestmnist_multi_label(tmp_path: Path, rng: np.random.Generator) -> None:
    labels = rng.integers(0, 2, (20, 14), dtype=np.uint8)
    path = _npz(tmp_path / "chestmnist_64.npz", rng, n=20, train_labels=labels)
    s = load_source(path)
    assert s.multi_label and s.labels.shape == (20, 14) and s.labels.dtype == np.uint8
    assert s.label_names[0] == "atelectasis" and s.label_names[-1] == "hernia"
    assert s.class_counts()["hernia"] == int(labels[:, 13].sum())


def test_npz_unknown_stem_names_classes(tmp_path: Path, rng: np.random.Generator) -> None:
    labels = np.array([[0], [2], [1], [2]], dtype=np.int64)
    path = _npz(tmp_path / "mine.npz", rng, n=4, train_labels=labels)
    assert load_source(path).label_names == ["class_0", "class_1", "class_2"]
    named = load_source(path, label_names=["a", "b", "c", "d"])
    assert named.label_names == ["a", "b", "c", "d"]
    assert named.class_counts() == {"a": 1, "b": 1, "c": 2, "d": 0}
    assert named.modality == "unknown"


def test_npz_colour_images_become_channels_first(tmp_path: Path, rng: np.random.Generator) -> None:
    images = rng.integers(0, 256, (6, 28, 28, 3), dtype=np.uint8)
    path = _npz(tmp_path / "dermamnist.npz", rng, n=6, train_images=images)
    s = load_source(path)
    assert s.images.shape == (6, 3, 28, 28)
    assert np.array_equal(s.images[2, 1], images[2, :, :, 1])
    assert s.modality == "dermatoscope" and len(s.label_names) == 7


def test_npz_resize_and_channels(tmp_path: Path, rng: np.random.Generator) -> None:
    images = np.full((3, 28, 28, 3), (200, 100, 50), dtype=np.uint8)
    path = _npz(tmp_path / "x.npz", rng, n=3, train_images=images)
    s = load_source(path, image_size=56, channels=1)
    assert s.images.shape == (3, 1, 56, 56)
    luma = round(0.299 * 200 + 0.587 * 100 + 0.114 * 50)
    assert np.all(np.abs(s.images.astype(int) - luma) <= 1)


def test_npz_missing_split_lists_available(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _npz(tmp_path / "pneumoniamnist.npz", rng)
    with pytest.raises(PublishError, match=r"pneumoniamnist\.npz") as err:
        load_source(path, split="val")
    assert "train" in str(err.value)


def test_npz_label_beyond_schema(tmp_path: Path, rng: np.random.Generator) -> None:
    labels = np.array([[0], [1], [2], [1]], dtype=np.uint8)
    path = _npz(tmp_path / "pneumoniamnist.npz", rng, n=4, train_labels=labels)
    with pytest.raises(PublishError, match=r"pneumoniamnist\.npz: label 2 \(train_labels\[2\]\) is "
                       r"not in the schema \['normal', 'pneumonia'\]"):
        load_source(path)


def test_npz_negative_label(tmp_path: Path, rng: np.random.Generator) -> None:
    labels = np.array([[0], [-1]], dtype=np.int64)
    path = _npz(tmp_path / "neg.npz", rng, n=2, train_labels=labels)
    with pytest.raises(PublishError, match=r"neg\.npz.*-1"):
        load_source(path, label_names=["a", "b"])


def test_npz_minus_one_needs_its_name(tmp_path: Path, rng: np.random.Generator) -> None:
    labels = np.array([[0], [1], [-1], [1]], dtype=np.int64)
    path = _npz(tmp_path / "cxr.npz", rng, n=4, train_labels=labels)
    with pytest.raises(PublishError, match=r"cxr\.npz: label -1 \(train_labels\[2\]\) is not a class "
                       r"index.*--label-names=-1:NAME,0:NAME,1:NAME"):
        load_source(path)
    named = load_source(path, label_names={"-1": "uncertain", "0": "normal", "1": "pneumonia"})
    assert named.label_names == ["uncertain", "normal", "pneumonia"]
    assert named.labels.tolist() == [1, 2, 0, 2]
    merged = load_source(path, label_names={"0": "normal", "1": "pneumonia", "-1": "pneumonia"})
    assert merged.label_names == ["normal", "pneumonia"] and merged.labels.tolist() == [0, 1, 1, 1]


def test_npz_one_based_labels_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _npz(tmp_path / "ones.npz", rng, n=3, train_labels=np.array([[1], [2], [2]]))
    with pytest.raises(PublishError, match=r"label 1 \(train_labels\[0\]\) is not a class index"):
        load_source(path)
    assert load_source(path, label_names={"1": "a", "2": "b"}).labels.tolist() == [0, 1, 1]


def test_npz_mapping_must_name_every_value(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _npz(tmp_path / "m.npz", rng, n=3, train_labels=np.array([[0], [1], [-1]]))
    with pytest.raises(PublishError, match=r"label -1 \(train_labels\[2\]\) is not named by "
                       r"--label-names.*add -1:NAME"):
        load_source(path, label_names={"0": "normal", "1": "pneumonia"})


def test_npz_mapping_refused_for_flags(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _npz(tmp_path / "flags.npz", rng, n=3, train_labels=np.zeros((3, 4), np.uint8))
    with pytest.raises(PublishError, match=r"flags\.npz: train_labels are 0/1 flags"):
        load_source(path, label_names={"0": "a", "1": "b"})


def _never_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if any zip member is opened (so: expanded)."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a member was opened before the limits were checked")

    monkeypatch.setattr(zipfile.ZipFile, "open", refuse)


def test_npz_declared_bomb_refused_before_expanding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = write_npz_bomb(tmp_path / "bomb.npz", declared=64 << 30)
    assert bomb.stat().st_size < 64 << 10  # a few KiB on disk
    _never_open(monkeypatch)
    with pytest.raises(PublishError, match=r"bomb\.npz: the archive declares 64\.0 GiB of arrays, "
                       r"above the limit of 8\.0 GiB; refused before expanding.*--max-npz-bytes"):
        load_source(bomb)


def test_npz_member_limit(tmp_path: Path, rng: np.random.Generator,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = _npz(tmp_path / "small.npz", rng, n=12)
    _never_open(monkeypatch)
    with pytest.raises(PublishError, match=r"member train_images\.npy declares 9\.3 KiB, above the "
                       r"limit of 8\.0 KiB.*--max-npz-member-bytes"):
        load_source(path, limits=SourceLimits(max_npz_member_bytes=8 << 10))


def test_npz_zeros_bomb_refused_by_ratio_then_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = write_npz_bomb(tmp_path / "zeros.npz", real=16 << 20)
    with monkeypatch.context() as patched:
        _never_open(patched)
        with pytest.raises(PublishError, match=r"member train_images\.npy expands \d+x .* above the "
                           r"limit of 200x.*--max-npz-ratio"):
            load_source(bomb)
    s = load_source(bomb, limits=SourceLimits(max_npz_ratio=2000))  # the owner vouches for it
    assert s.images.shape == (4096, 1, 64, 64) and s.label_names == ["class_0"]


def test_npz_header_claiming_more_than_the_member_holds(tmp_path: Path) -> None:
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w") as archive:
        with archive.open("train_images.npy", "w") as fp:
            np.lib.format.write_array_header_1_0(
                fp, {"descr": "|u1", "fortran_order": False, "shape": (10**7, 256, 256)})
            fp.write(bytes(1000))
        with archive.open("train_labels.npy", "w") as fp:
            np.save(fp, np.zeros((10, 1), np.uint8))
    with pytest.raises(PublishError, match=r"liar\.npz: train_images\.npy declares a \(10000000, 256, "
                       r"256\) uint8 array \(610\.4 GiB\) but holds only"):
        load_source(path)


def test_npz_pixel_limit(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _npz(tmp_path / "big.npz", rng, n=2, train_images=np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(PublishError,
                       match=r"big\.npz \(train_images\.npy\): image is 64x64 px .*--max-pixels"):
        load_source(path, limits=SourceLimits(max_pixels=1000))


def test_npz_object_array_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, train_images=np.array([{"a": 1}], dtype=object),
             train_labels=np.zeros((1, 1), np.uint8))
    with pytest.raises(PublishError, match=r"obj\.npz: train_images\.npy holds Python objects"):
        load_source(path)


def test_npz_multi_label_not_binary(tmp_path: Path, rng: np.random.Generator) -> None:
    labels = np.zeros((5, 14), dtype=np.uint8)
    labels[3, 4] = 2
    path = _npz(tmp_path / "chestmnist.npz", rng, n=5, train_labels=labels)
    with pytest.raises(PublishError, match=r"chestmnist\.npz.*\[3, 4\] is 2"):
        load_source(path)


def test_npz_multi_label_wrong_schema_width(tmp_path: Path, rng: np.random.Generator) -> None:
    labels = np.zeros((5, 3), dtype=np.uint8)
    path = _npz(tmp_path / "flags.npz", rng, n=5, train_labels=labels)
    with pytest.raises(PublishError, match=r"flags\.npz.*3 columns"):
        load_source(path, label_names=["a", "b"])


def test_npz_count_mismatch(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _npz(tmp_path / "m.npz", rng, n=5, train_labels=np.zeros((4, 1), np.uint8))
    with pytest.raises(PublishError, match=r"m\.npz: 5 train_images but 4 train_labels"):
        load_source(path)


def test_npz_float_images_refused(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _npz(tmp_path / "f.npz", rng, n=2, train_images=np.zeros((2, 28, 28), np.float32))
    with pytest.raises(PublishError, match=r"f\.npz.*float32"):
        load_source(path)


def test_npz_truncated_file(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _npz(tmp_path / "cut.npz", rng, n=50)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PublishError, match=r"cut\.npz.*(truncated|npz)"):
        load_source(path)


def test_npz_text_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.npz"
    path.write_text("not an archive")
    with pytest.raises(PublishError, match=r"notes\.npz"):
        load_source(path)


def test_load_source_unknown_format_lists_known(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _npz(tmp_path / "a.npz", rng)
    with pytest.raises(PublishError, match=r"a\.npz.*'tiff'") as err:
        load_source(path, fmt="tiff")
    assert all(name in str(err.value) for name in ("npz", "folder", "dicom"))


def test_load_source_missing_path(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match=r"nowhere\.npz: no such file"):
        load_source(tmp_path / "nowhere.npz")


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"image_size": 4}, "image_size"),
    ({"channels": 2}, "channels"),
    ({"label_names": ["a", "a"]}, "label_names"),
    ({"label_names": {"1": "a", "01": "b"}}, "label_names"),
    ({"label_names": {"1": ""}}, "label_names"),
])  # fmt: skip
def test_load_source_bad_options(
    tmp_path: Path, rng: np.random.Generator, kwargs: dict[str, object], problem: str
) -> None:
    path = _npz(tmp_path / "opt.npz", rng)
    with pytest.raises(PublishError, match=rf"opt\.npz: {problem}"):
        load_source(path, **kwargs)  # type: ignore[arg-type]


def test_detect_format_npz_and_unknown_file(tmp_path: Path, rng: np.random.Generator) -> None:
    assert detect_format(_npz(tmp_path / "a.npz", rng)) == "npz"
    other = tmp_path / "a.tiff"
    other.write_bytes(b"x")
    with pytest.raises(PublishError, match=r"a\.tiff"):
        detect_format(other)
    (tmp_path / "empty").mkdir()
    with pytest.raises(PublishError, match="empty"):
        detect_format(tmp_path / "empty")


def test_register_format_refuses_duplicate_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_format("npz", FORMATS["folder"])
    assert FORMATS["npz"].__name__ == "load_npz"


def test_imageset_describe_is_json(tmp_path: Path, rng: np.random.Generator) -> None:
    path = _npz(tmp_path / "pneumoniamnist.npz", rng, n=7)
    meta = load_source(path).describe()
    back = json.loads(json.dumps(meta))
    assert back["n"] == 7 and back["image_size"] == [28, 28] and back["channels"] == 1
    assert back["dtype"] == "uint8" and back["label_names"] == ["normal", "pneumonia"]
    assert sum(back["class_counts"].values()) == 7 and back["synthetic"] is False


def test_imageset_subset_keeps_schema(tmp_path: Path, rng: np.random.Generator) -> None:
    s = load_source(_npz(tmp_path / "pneumoniamnist.npz", rng, n=10))
    sub = s.subset(np.array([1, 3, 5]))
    assert len(sub) == 3 and sub.label_names == s.label_names
    assert np.array_equal(sub.images[1], s.images[3]) and sub.labels[2] == s.labels[5]


def test_imageset_rejects_wrong_label_dtype() -> None:
    with pytest.raises(PublishError, match=r"here: multi-class labels must be \(N,\) int64"):
        ImageSet(np.zeros((2, 1, 8, 8), np.uint8), np.zeros(2, np.int32), ["a"], False, "x",
                 "here")


def test_medmnist_info_covers_2d_sets() -> None:
    assert len(MEDMNIST_2D) == 12
    assert MEDMNIST_2D["breastmnist"].label_names == ("malignant", "normal, benign")
    assert lookup(Path("OCTMNIST_128.npz")) is MEDMNIST_2D["octmnist"]
    assert MEDMNIST_2D["chestmnist"].multi_label and len(MEDMNIST_2D["chestmnist"].label_names) == 14


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    n=st.integers(1, 6),
    side=st.integers(8, 20),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_npz_round_trip_property(tmp_path: Path, n: int, side: int, k: int, seed: int) -> None:
    """Whatever valid set is saved, the same pixels and labels come back."""
    g = np.random.default_rng(seed)
    images = g.integers(0, 256, (n, side, side), dtype=np.uint8)
    labels = g.integers(0, k, (n, 1))
    path = tmp_path / f"rt_{n}_{side}_{k}_{seed}.npz"
    np.savez(path, train_images=images, train_labels=labels)
    s = load_source(path, label_names=[f"c{i}" for i in range(k)])
    assert np.array_equal(s.images[:, 0], images)
    assert np.array_equal(s.labels, labels[:, 0])
