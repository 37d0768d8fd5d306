"""Which expressions keep only some images: the *picks* of the review's taint analysis.

``images[0]``, ``labels[:1]``, ``next(iter(images))``, ``np.take(images, 0)``,
``max(images, key=...)``, ``images.T[..., 0]`` and a loop over ``range(1, n)``
all keep a few images, so a statistic over them describes those images. A mask
computed from the data (``images[labels == c]``), a split sized from the data
(``images[: int(0.8 * len(images))]``), a permutation (``images[rng.permutation(n)]``)
and a column key (``df["label"]``) do not. :class:`PickRules` answers these
questions for :class:`domains.review.taint.TaintAnalysis`, which owns the taints.
"""

from __future__ import annotations

import ast
from collections.abc import Callable

from domains.review.calls import (
    AXIS_ATTRS,
    AXIS_METHODS,
    INDEX_FUNCS,
    INDEX_METHODS,
    PERMUTATIONS,
    SELECT_FUNCS,
    SELECT_METHODS,
)
from domains.review.names import Resolver
from domains.review.taint_kinds import ITEM_KINDS, Kind, Taint


def whole(index: ast.expr) -> bool:
    """``x[:]``, ``x[...]`` or ``x[:, ...]``: an index that keeps everything."""
    if isinstance(index, ast.Tuple):
        return all(whole(e) for e in index.elts)
    if isinstance(index, ast.Slice):
        return index.lower is None and index.upper is None and index.step is None
    return isinstance(index, ast.Constant) and index.value is Ellipsis


def call_pick(node: ast.Call, names: frozenset[str], method: str | None) -> str | None:
    """Whether a call keeps some elements of its input ("element") or says where they are."""
    if names & SELECT_FUNCS or method in SELECT_METHODS:
        return "element"
    if names & {"max", "min"} and any(kw.arg == "key" for kw in node.keywords):
        return "element"  # the image with the largest key, not the largest value
    if node.keywords:
        return None  # argmax(dim=1): one position per image, a per-image value
    if (names & INDEX_FUNCS and len(node.args) <= 1) or (method in INDEX_METHODS and not node.args):
        return "position"
    return None


def _keeps_first_axis(method: str, args: list[ast.expr], keywords: list[ast.keyword]) -> bool:
    """``x.reshape(len(x), -1)`` and ``x.flatten(1)`` keep one image per row; ``x.ravel()`` not."""
    if method in ("reshape", "view"):
        dims = args[0].elts if len(args) == 1 and isinstance(args[0], (ast.Tuple, ast.List)) else args
        return len(dims) > 1
    if method == "flatten":  # torch: flatten(start_dim); numpy: flatten(order)
        start = args[0] if args else next((k.value for k in keywords if k.arg == "start_dim"), None)
        return isinstance(start, ast.Constant) and isinstance(start.value, int) and start.value >= 1
    return False


class PickRules:
    """Pick questions that need the taint of sub-expressions and what names stand for."""

    def __init__(self, taint_of: Callable[[ast.AST], Taint], resolver: Resolver) -> None:
        self.taint_of = taint_of
        self.resolver = resolver

    def selects(self, index: ast.expr) -> bool:
        """Whether indexing the first axis with ``index`` keeps only some images."""
        if isinstance(index, ast.Slice):
            if index.step is not None:
                return True
            # `images[:n]` with `n = int(0.8 * len(images))` is a split, not a pick.
            return any(b is not None and self.taint_of(b).kind != Kind.COUNT
                       for b in (index.lower, index.upper))
        if isinstance(index, ast.Constant) and (index.value is Ellipsis or index.value is None
                                                or isinstance(index.value, str)):
            return False  # x[..., 0], x[None], df["label"]: no image is picked
        taint = self.taint_of(index)
        if taint.kind == Kind.COUNT and not taint.picks and self.permutes(index):
            return False  # images[rng.permutation(len(images))] shuffles them all
        # A mask or ids computed from the data select by value; their picks say if they pick.
        return taint.kind not in (Kind.PER_ITEM, Kind.RAW) or bool(taint.picks)

    def permutes(self, index: ast.expr, seen: frozenset[str] = frozenset()) -> bool:
        """``rng.permutation(n)``, ``torch.randperm(n)``, a name bound to one, or a split of one."""
        if isinstance(index, ast.Call):
            func = index.func
            named = {func.attr} if isinstance(func, ast.Attribute) else set()
            named |= {n.rsplit(".", 1)[-1] for n in self.resolver.names(func)}
            return bool(named & PERMUTATIONS)
        if isinstance(index, ast.Subscript) and isinstance(index.slice, ast.Slice):
            return not self.selects(index.slice) and self.permutes(index.value, seen)
        if isinstance(index, ast.Name) and index.id not in seen:
            bound = self.resolver.bindings.values.get(index.id, [])
            return bool(bound) and all(v is not None and self.permutes(v, seen | {index.id})
                                       for v in bound)
        return False

    def moves_axes(self, node: ast.expr, seen: frozenset[str] = frozenset()) -> bool:
        """``x.T``, ``x.reshape(-1)``, ``np.moveaxis(x, 0, -1)``, or a name bound to one."""
        if isinstance(node, ast.Attribute):
            return node.attr in AXIS_ATTRS
        if isinstance(node, ast.Call):
            func = node.func
            on_value = isinstance(func, ast.Attribute) and not self.resolver.is_module(func.value)
            method = func.attr if on_value and isinstance(func, ast.Attribute) else next(
                (n.rsplit(".", 1)[-1] for n in sorted(self.resolver.names(func))
                 if n.rsplit(".", 1)[-1] in AXIS_METHODS), None)
            args = node.args if on_value else node.args[1:]  # np.reshape(x, shape)
            return method in AXIS_METHODS and not _keeps_first_axis(method, args, node.keywords)
        if isinstance(node, ast.Name) and node.id not in seen:
            return any(v is not None and self.moves_axes(v, seen | {node.id})
                       for v in self.resolver.bindings.values.get(node.id, []))
        return False

    def partial(self, iterable: ast.expr) -> bool:
        """Whether a loop over ``iterable`` skips images: ``range(1, n)``, ``zip(x, range(1))``."""
        if isinstance(iterable, ast.Subscript):
            index = iterable.slice
            return self.selects(index.elts[0] if isinstance(index, ast.Tuple) and index.elts
                                 else index)
        if not isinstance(iterable, ast.Call):
            return False
        names, args = self.resolver.names(iterable.func), iterable.args
        if "range" in names:
            start = args[0] if len(args) == 2 else None
            return len(args) == 3 or not (start is None or (
                isinstance(start, ast.Constant) and start.value == 0))
        if "zip" in names:  # zip stops at its shortest argument
            return any(self.taint_of(a).kind not in ITEM_KINDS for a in args)
        if names & {"enumerate", "reversed", "sorted", "list", "tuple", "iter"} and args:
            return self.partial(args[0])
        return False
