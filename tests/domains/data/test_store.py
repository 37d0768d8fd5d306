"""The training store memory-maps its images, still reads the older layout, and names damage."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from domains.data import store
from domains.site import lifecycle
from domains.site.datadir import DataDir


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    data_dir = DataDir(tmp_path / "site")
    lifecycle.initialize(data_dir, name="s", port=1, host="127.0.0.1")
    return data_dir


def _meta(images: np.ndarray) -> dict[str, object]:
    return {"label_names": ["normal", "pneumonia"], "multi_label": False,
            "fingerprint_sha256": store.fingerprint(images)}


def _images(n: int, size: int = 28) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, 1, size, size), dtype=np.uint8)


def test_load_memory_maps_the_images_read_only(data_dir: DataDir) -> None:
    images, labels = _images(30), np.arange(30) % 2
    store.save(data_dir, "xr", images=images, labels=labels, meta=_meta(images))
    loaded = store.load(data_dir, "xr")
    assert isinstance(loaded.images, np.memmap) and not loaded.images.flags.writeable
    np.testing.assert_array_equal(loaded.images, images)
    np.testing.assert_array_equal(loaded.labels, labels)
    assert loaded.fingerprint == hashlib.sha256(images.tobytes()).hexdigest()  # what publish records
    with pytest.raises(ValueError):
        loaded.images[0, 0, 0, 0] = 1  # nothing that holds the copy can change it
    for path in data_dir.datasets_dir.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_loading_does_not_copy_the_dataset_into_anonymous_memory(data_dir: DataDir) -> None:
    """A datasite serving several datasets must not hold them all: the images stay file-backed,
    pages the kernel can drop, not process memory (Linux smaps_rollup "Anonymous")."""
    rollup = Path("/proc/self/smaps_rollup")
    if not rollup.exists():
        pytest.skip("needs Linux's /proc/self/smaps_rollup")

    def anonymous_mb() -> float:
        line = next(ln for ln in rollup.read_text().splitlines() if ln.startswith("Anonymous:"))
        return int(line.split()[1]) / 1024

    images = _images(400, size=256)  # 26 MB, hashed and read in full by load
    store.save(data_dir, "big", images=images, labels=np.arange(400) % 2, meta=_meta(images))
    del images
    before = anonymous_mb()
    loaded = store.load(data_dir, "big")
    assert int(loaded.images[:, :, ::16, ::16].sum()) > 0  # touch every image
    assert anonymous_mb() - before < 10, "the images were copied into process memory"


def test_stores_of_the_older_npz_layout_still_load(data_dir: DataDir) -> None:
    images, labels = _images(12), np.arange(12) % 2
    data_dir.datasets_dir.mkdir(mode=0o700, exist_ok=True)
    np.savez(data_dir.datasets_dir / "old.npz", images=images, labels=labels,
             meta=np.array(json.dumps(_meta(images))))
    loaded = store.load(data_dir, "old")
    np.testing.assert_array_equal(loaded.images, images)
    store.remove(data_dir, "old")
    assert not any(data_dir.datasets_dir.iterdir())


@pytest.mark.parametrize("damage", ["no metadata", "truncated images", "changed pixel"])
def test_a_damaged_copy_is_named_and_left_as_it_is(data_dir: DataDir, damage: str) -> None:
    images = _images(20)
    path = store.save(data_dir, "xr", images=images, labels=np.arange(20) % 2, meta=_meta(images))
    if damage == "no metadata":
        (data_dir.datasets_dir / "xr.meta.json").unlink()
    elif damage == "truncated images":
        path.write_bytes(path.read_bytes()[:500])
    else:
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    left = {p.name: p.read_bytes() for p in data_dir.datasets_dir.iterdir()}
    with pytest.raises(store.StoreError, match=r"training copy of 'xr' .* is damaged"):
        store.load(data_dir, "xr")
    assert {p.name: p.read_bytes() for p in data_dir.datasets_dir.iterdir()} == left


def test_a_dataset_never_published_is_named(data_dir: DataDir) -> None:
    with pytest.raises(store.StoreError, match="no training copy"):
        store.load(data_dir, "nope")
