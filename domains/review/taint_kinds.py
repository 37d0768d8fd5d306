"""The taint algebra of the review: how revealing a value derived from private data is.

A :class:`Taint` pairs a :class:`Kind` (from a clean constant up to the raw
asset) with the assets it came from and its *picks*: the selections of a few
elements it depends on (``"index"`` for ``images[0]``, ``"each img"`` for one
iteration of ``for img in images``). A statistic with picks describes a few
images, not the asset; accumulating over every iteration of a loop removes
that loop's pick again. :mod:`domains.review.taint` computes taints.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import NamedTuple


class Kind(IntEnum):
    """How a value relates to the private data; a join keeps the most revealing."""

    CLEAN = 0
    REDUCED = 1  # a statistic (a mean, an accuracy): over all images unless it has picks
    COUNT = 2  # a number of images (len, shape); looping over it visits each image
    MODEL = 3  # state of something trained on the images
    PER_ITEM = 4  # one value per image or batch
    RAW = 5  # the asset itself, a slice or a copy


class Taint(NamedTuple):
    kind: Kind
    assets: frozenset[str]
    picks: frozenset[str] = frozenset()  # "index" or "each NAME": selections it depends on


CLEAN = Taint(Kind.CLEAN, frozenset())
INDEX = frozenset({"index"})
ITEM_KINDS = (Kind.COUNT, Kind.PER_ITEM, Kind.RAW)  # looping over these visits each image


def join(taints: Iterable[Taint]) -> Taint:
    kind, assets, picks = Kind.CLEAN, frozenset[str](), frozenset[str]()
    for taint in taints:
        kind, assets, picks = max(kind, taint.kind), assets | taint.assets, picks | taint.picks
    return Taint(kind, assets, picks) if kind else CLEAN


def relabel(taint: Taint, kind: Kind) -> Taint:
    """The same origin, relabelled; clean stays clean. A model keeps no picks: it learnt."""
    if not taint.kind:
        return CLEAN
    return Taint(kind, taint.assets, frozenset() if kind == Kind.MODEL else taint.picks)


def demote(taint: Taint) -> Taint:
    """Computing on the raw asset gives per-image values, no longer the asset itself."""
    return relabel(taint, Kind.PER_ITEM) if taint.kind == Kind.RAW else taint


def picked(taint: Taint, picks: frozenset[str]) -> Taint:
    return taint._replace(picks=taint.picks | picks) if taint.kind else CLEAN


def unpicked(taint: Taint, picks: frozenset[str]) -> Taint:
    return taint._replace(picks=taint.picks - picks) if taint.kind else CLEAN
