"""SourceLimits: sizes as the publish options take them, and no limit that admits nothing."""

from __future__ import annotations

import pytest

from domains.data.formats import SourceLimits, parse_size
from domains.data.formats.limits import format_size
from domains.errors import PublishError


@pytest.mark.parametrize(("text", "size"), [
    ("8G", 8 << 30), ("8GiB", 8 << 30), ("512m", 512 << 20), ("1.5K", 1536), ("100", 100), ("2 TB", 2 << 40),
])  # fmt: skip
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "-1G", "8X", "G"])
def test_parse_size_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValueError, match="expected a size such as 8G"):
        parse_size(text)


def test_format_size_reads_like_the_options() -> None:
    assert [format_size(n) for n in (12, 9 << 10, 64 << 30)] == ["12 B", "9.0 KiB", "64.0 GiB"]


@pytest.mark.parametrize("field", ["max_pixels", "max_npz_bytes", "max_npz_member_bytes", "max_npz_ratio"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(PublishError, match=rf"^{field}: must be positive \(got 0\)"):
        SourceLimits(**{field: 0})  # type: ignore[arg-type]
