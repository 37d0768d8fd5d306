"""Class-folder PNG/JPEG loading and the size/channel harmonization behind it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from support import write_png_header

from domains.data.formats import SourceLimits, detect_format, harmonize, load_source
from domains.errors import PublishError

SaveImage = Callable[..., Path]


def _grey(value: int, h: int = 16, w: int = 16) -> np.ndarray:
    return np.full((h, w), value, dtype=np.uint8)


@pytest.fixture
def two_classes(tmp_path: Path, save_image: SaveImage) -> Path:
    root = tmp_path / "xrays"
    for i in range(3):
        save_image(root / "pneumonia" / f"p{i}.png", _grey(200))
    for i in range(2):
        save_image(root / "normal" / f"n{i}.png", _grey(50))
    return root


def test_folder_labels_follow_sorted_class_folders(two_classes: Path) -> None:
    s = load_source(two_classes)
    assert s.label_names == ["normal", "pneumonia"]
    assert s.images.shape == (5, 1, 16, 16)
    assert s.class_counts() == {"normal": 2, "pneumonia": 3}
    assert np.all(s.images[s.labels == 1] == 200) and np.all(s.images[s.labels == 0] == 50)
    assert detect_format(two_classes) == "folder"


def test_folder_label_names_fix_the_order(two_classes: Path) -> None:
    s = load_source(two_classes, label_names=["pneumonia", "normal", "covid"])
    assert s.class_counts() == {"pneumonia": 3, "normal": 2, "covid": 0}
    assert np.all(s.images[s.labels == 0] == 200)


def test_folder_not_in_label_names(two_classes: Path) -> None:
    with pytest.raises(PublishError, match=r"normal: class folder 'normal' is not in"):
        load_source(two_classes, label_names=["pneumonia"])


def test_folder_mixed_modes_and_extensions(tmp_path: Path, save_image: SaveImage) -> None:
    root = tmp_path / "mixed"
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 255
    save_image(root / "a" / "colour.JPG", rgb, quality=95)
    rgba = np.dstack([_grey(100), _grey(100), _grey(100), _grey(255)])
    save_image(root / "a" / "alpha.PNG", rgba)
    save_image(root / "b" / "deep.png", np.arange(256, dtype=np.uint16).reshape(16, 16) * 200)
    pal = np.zeros((16, 16), np.uint8)
    from PIL import Image

    img = Image.fromarray(pal, mode="L").convert("P")
    img.save(root / "b" / "palette.png")
    s = load_source(root)
    assert s.images.shape == (4, 3, 16, 16)
    order = ["alpha.PNG", "colour.JPG", "deep.png", "palette.png"]  # class, then path
    colour = s.images[order.index("colour.JPG")]
    assert colour[0].mean() > 240 and colour[1].mean() < 15
    deep = s.images[order.index("deep.png"), 0]
    assert deep.min() == 0 and deep.max() == 255  # 16-bit stretched, not clipped
    assert np.all(s.images[order.index("alpha.PNG")] == 100)


def test_folder_rgb_export_of_grey_stays_grey(tmp_path: Path, save_image: SaveImage) -> None:
    grey3 = np.repeat(_grey(120)[..., None], 3, axis=2)
    save_image(tmp_path / "d" / "a" / "x.jpg", grey3)
    save_image(tmp_path / "d" / "b" / "y.png", _grey(30))
    assert load_source(tmp_path / "d").images.shape[1] == 1


def test_folder_ignores_hidden_and_other_files(two_classes: Path) -> None:
    (two_classes / "normal" / ".DS_Store").write_bytes(b"\0\1junk")
    (two_classes / "normal" / "._n0.png").write_bytes(b"resource fork")
    (two_classes / ".cache").mkdir()
    (two_classes / ".cache" / "x.png").write_bytes(b"junk")
    (two_classes / "normal" / "notes.txt").write_text("reader notes")
    (two_classes / "README.md").write_text("about")
    assert len(load_source(two_classes)) == 5


def test_folder_truncated_png(two_classes: Path, save_image: SaveImage) -> None:
    bad = save_image(two_classes / "normal" / "cut.png", np.random.default_rng(0).integers(
        0, 256, (64, 64), dtype=np.uint8))
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(PublishError, match=r"cut\.png: cannot decode image"):
        load_source(two_classes)


def test_folder_truncated_jpeg(two_classes: Path, save_image: SaveImage) -> None:
    bad = save_image(two_classes / "normal" / "cut.jpg", np.random.default_rng(0).integers(
        0, 256, (64, 64), dtype=np.uint8))
    bad.write_bytes(bad.read_bytes()[:400])
    with pytest.raises(PublishError, match=r"cut\.jpg"):
        load_source(two_classes)


def test_folder_text_file_with_image_extension(two_classes: Path) -> None:
    (two_classes / "pneumonia" / "report.png").write_text("Findings: none")
    with pytest.raises(PublishError, match=r"report\.png: cannot decode image"):
        load_source(two_classes)


def test_folder_empty_root(tmp_path: Path) -> None:
    (tmp_path / "empty" / "normal").mkdir(parents=True)
    with pytest.raises(PublishError, match=r"normal: class folder holds no"):
        load_source(tmp_path / "empty", fmt="folder")
    (tmp_path / "bare").mkdir()
    with pytest.raises(PublishError, match=r"bare: no class subfolders"):
        load_source(tmp_path / "bare", fmt="folder")


def test_folder_image_outside_class_folder(two_classes: Path, save_image: SaveImage) -> None:
    save_image(two_classes / "stray.png", _grey(1))
    with pytest.raises(PublishError, match=r"stray\.png: image outside a class folder"):
        load_source(two_classes)


def test_folder_mixed_sizes_resized_to_most_common(tmp_path: Path, save_image: SaveImage) -> None:
    root = tmp_path / "sizes"
    save_image(root / "a" / "1.png", _grey(80, 32, 32))
    save_image(root / "a" / "2.png", _grey(80, 32, 32))
    save_image(root / "b" / "3.png", _grey(160, 40, 36))  # shrinks (area)
    save_image(root / "b" / "4.png", _grey(160, 20, 20))  # grows (bilinear)
    s = load_source(root)
    assert s.images.shape == (4, 1, 32, 32)
    assert np.all(s.images[2:] == 160)


def test_folder_three_to_one_aspect_refused(tmp_path: Path, save_image: SaveImage) -> None:
    root = tmp_path / "aspect"
    for i in range(3):
        save_image(root / "a" / f"{i}.png", _grey(10, 32, 32))
    save_image(root / "b" / "wide.png", _grey(10, 30, 90))
    with pytest.raises(PublishError, match=r"wide\.png: image is 30x90 px .* 32x32 px") as err:
        load_source(root)
    assert "crop" in str(err.value)


def test_folder_tiny_image_refused(tmp_path: Path, save_image: SaveImage) -> None:
    root = tmp_path / "tiny"
    save_image(root / "a" / "ok.png", _grey(10, 16, 16))
    save_image(root / "b" / "thumb.png", _grey(10, 4, 4))
    with pytest.raises(PublishError, match=r"thumb\.png: image is 4x4 px, smaller than 8"):
        load_source(root, image_size=16)


def test_folder_image_size_option(two_classes: Path) -> None:
    s = load_source(two_classes, image_size=28, channels=3)
    assert s.images.shape == (5, 3, 28, 28)
    assert np.all(s.images[s.labels == 1] == 200)


def test_harmonize_grey_to_rgb_and_rgb_to_luma() -> None:
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 1] = 255
    out = harmonize([rgb, np.full((10, 10), 7, np.uint8)], ["a", "b"], channels=1)
    assert out.shape == (2, 1, 10, 10)
    assert np.all(out[0] == round(0.587 * 255)) and np.all(out[1] == 7)
    assert np.all(harmonize([np.full((10, 10), 7, np.uint8)], ["c"], channels=3) == 7)


# -- links out of the source, image size limits, numeric class folders --------------------------
def test_folder_linked_class_folder_outside_refused(two_classes: Path, tmp_path: Path,
                                                    save_image: SaveImage) -> None:
    save_image(tmp_path / "elsewhere" / "x.png", _grey(9))
    (two_classes / "covid").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(PublishError, match=r"covid: resolves outside the source folder .*elsewhere"):
        load_source(two_classes)


@pytest.mark.parametrize("nested", [False, True])
def test_folder_linked_image_or_subfolder_outside_refused(
    two_classes: Path, tmp_path: Path, save_image: SaveImage, nested: bool
) -> None:
    secret = save_image(tmp_path / "private" / "patient.png", _grey(9))
    link = two_classes / "normal" / ("more" if nested else "n9.png")
    link.symlink_to(secret.parent if nested else secret)
    with pytest.raises(PublishError, match=rf"normal/{link.name}: resolves outside the source"):
        load_source(two_classes)


def test_folder_links_inside_the_source_are_fine(two_classes: Path) -> None:
    (two_classes / "normal" / "again.png").symlink_to(two_classes / "pneumonia" / "p0.png")
    s = load_source(two_classes)
    assert s.class_counts() == {"normal": 3, "pneumonia": 3}


def test_folder_pillow_decompression_bomb_is_one_line(two_classes: Path) -> None:
    write_png_header(two_classes / "normal" / "huge.png", 15000, 15000)
    with pytest.raises(PublishError, match=r"huge\.png: image has 225,000,000 pixels, above the limit "
                       r"of 67,108,864 pixels \(Pillow refuses it") as err:
        load_source(two_classes)
    assert "\n" not in str(err.value)


def test_folder_pixel_limit_checked_from_the_header(two_classes: Path) -> None:
    write_png_header(two_classes / "normal" / "wide.png", 9000, 9000)  # under Pillow's own limit
    with pytest.raises(PublishError, match=r"wide\.png: image is 9000x9000 px \(81,000,000 pixels\), "
                       r"above the limit of 67,108,864 pixels; refused before decoding"):
        load_source(two_classes)
    (two_classes / "normal" / "wide.png").unlink()
    with pytest.raises(PublishError, match=r"n0\.png: image is 16x16 px .*--max-pixels"):
        load_source(two_classes, limits=SourceLimits(max_pixels=255))
    assert len(load_source(two_classes, limits=SourceLimits(max_pixels=256))) == 5


def test_folder_numeric_class_folders(tmp_path: Path, save_image: SaveImage) -> None:
    for cls in ("0", "1", "-1"):
        save_image(tmp_path / "cxr" / cls / "a.png", _grey(10))
    with pytest.raises(PublishError, match=r"-1: class folder '-1' is not a class index"):
        load_source(tmp_path / "cxr")
    s = load_source(tmp_path / "cxr", label_names={"-1": "uncertain", "0": "normal", "1": "pneumonia"})
    assert s.label_names == ["uncertain", "normal", "pneumonia"]
    assert s.class_counts() == {"uncertain": 1, "normal": 1, "pneumonia": 1}
