"""Return-value review: which values of a submitted function come from the private data.

:func:`review_returns` finds the submitted function, follows every value
derived from its asset arguments (:class:`Kind` says how revealing each one
is) and flags the returned values a data owner should look at. The rules, as
an owner reads them, and their known limits are in :mod:`domains.review`;
what each library call does to a value is in :mod:`domains.review_calls`.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Collection, Iterable, Iterator
from enum import IntEnum
from typing import NamedTuple

from domains.review_calls import (
    COPY_FUNCS,
    COUNT_ATTRS,
    COUNT_METHODS,
    FIT_METHODS,
    META_ATTRS,
    MUTATORS,
    PRIVATE_WRAPPERS,
    VIEW_METHODS,
    is_reducer,
)
from domains.review_names import import_aliases, qualname, snippet
from domains.review_rules import Flag


class Kind(IntEnum):
    """How a value relates to the private data; a join keeps the most revealing."""

    CLEAN = 0
    REDUCED = 1  # a statistic over all images (a mean, an accuracy)
    COUNT = 2  # a number of images (len, shape); looping over it visits each image
    MODEL = 3  # state of something trained on the images
    PER_ITEM = 4  # one value per image or batch
    RAW = 5  # the asset itself, a slice or a copy


class _Taint(NamedTuple):
    kind: Kind
    assets: frozenset[str]


_CLEAN = _Taint(Kind.CLEAN, frozenset())
_ITEM_KINDS = (Kind.COUNT, Kind.PER_ITEM, Kind.RAW)
_MAX_PASSES = 50

_PASS_THROUGH = (ast.List, ast.Tuple, ast.Set, ast.Dict, ast.BoolOp, ast.IfExp, ast.Starred,
                 ast.Await)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_BUILTIN_NAMES = frozenset(dir(builtins))


def _join(taints: Iterable[_Taint]) -> _Taint:
    kind, assets = Kind.CLEAN, frozenset[str]()
    for taint in taints:
        kind, assets = max(kind, taint.kind), assets | taint.assets
    return _Taint(kind, assets) if kind else _CLEAN


def _as(taint: _Taint, kind: Kind) -> _Taint:
    """The same origin, relabelled; clean stays clean."""
    return _Taint(kind, taint.assets) if taint.kind else _CLEAN


def _demote(taint: _Taint) -> _Taint:
    """Computing on the raw asset gives per-image values, no longer the asset itself."""
    return _as(taint, Kind.PER_ITEM) if taint.kind == Kind.RAW else taint


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _call_args(call: ast.Call) -> list[ast.expr]:
    positional = [a.value if isinstance(a, ast.Starred) else a for a in call.args]
    return positional + [kw.value for kw in call.keywords]


def _slot_increment(stmt: ast.Assign) -> ast.expr | None:
    """``v`` in ``d[k] = d[k] + v`` or ``d[k] = d.get(k, 0) + v``, else None."""
    target, value = stmt.targets[0], stmt.value
    if len(stmt.targets) != 1 or not isinstance(target, ast.Subscript):
        return None
    if not isinstance(value, ast.BinOp):
        return None
    read = value.left
    same = ast.unparse(read) == ast.unparse(target) or (
        isinstance(read, ast.Call) and isinstance(read.func, ast.Attribute)
        and read.func.attr == "get" and bool(read.args)
        and ast.unparse(read.func.value) == ast.unparse(target.value)
        and ast.unparse(read.args[0]) == ast.unparse(target.slice))
    return value.right if same else None


def _own_exprs(stmt: ast.stmt) -> Iterator[ast.expr]:
    """Expressions of ``stmt`` itself, not of the statements nested in it."""
    for _, value in ast.iter_fields(stmt):
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, ast.expr):
                yield item
            elif isinstance(item, ast.withitem):
                yield item.context_expr


def _returned_values(func: ast.AST) -> list[ast.expr]:
    """Values ``func`` returns or yields, leaving out nested functions and classes."""
    found: list[ast.expr] = []
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        if isinstance(node, (*_FUNCTIONS, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom)) and node.value is not None:
            found.append(node.value)
        stack.extend(ast.iter_child_nodes(node))
    return found


class _TaintAnalysis:
    """Which names in one function hold values derived from the asset arguments.

    Flow-insensitive on purpose: every binding of a name joins into one taint,
    and the body is re-read until nothing changes. That is blind to order
    (see the known limits in :mod:`domains.review`) but cannot be fooled by it.
    """

    def __init__(self, func: ast.AST, assets: Iterable[str], aliases: dict[str, str]) -> None:
        self.aliases = aliases
        self.env = {name: _Taint(Kind.RAW, frozenset({name})) for name in assets}
        self.defs = {node.name for node in ast.walk(func)
                     if isinstance(node, (*_FUNCTIONS, ast.ClassDef)) and node is not func}
        self._changed = False
        body = getattr(func, "body", [])
        for _ in range(_MAX_PASSES):
            self._changed = False
            self._block(body, per_item=False)
            if not self._changed:
                break

    def bind(self, name: str, taint: _Taint) -> None:
        old = self.env.get(name, _CLEAN)
        new = _join((old, taint))
        if new != old:
            self.env[name] = new
            self._changed = True

    # -- statements ---------------------------------------------------------

    def _block(self, body: list[ast.stmt], per_item: bool) -> None:
        """``per_item``: inside a loop that visits the images one (batch) at a time."""
        for stmt in body:
            self._stmt(stmt, per_item)

    def _stmt(self, stmt: ast.stmt, per_item: bool) -> None:
        if isinstance(stmt, _FUNCTIONS):
            self._block(stmt.body, per_item)
            self.bind(stmt.name, _join(self.taint_of(v) for v in _returned_values(stmt)))
            return
        if isinstance(stmt, ast.ClassDef):
            self._block(stmt.body, per_item)
            return
        for expr in _own_exprs(stmt):
            self.taint_of(expr)
            for call in ast.walk(expr):
                if isinstance(call, ast.Call):
                    self._call_effects(call, per_item)
        self._bindings(stmt, per_item)
        inner = per_item
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            inner = per_item or self.taint_of(stmt.iter).kind in _ITEM_KINDS
        for field, value in ast.iter_fields(stmt):
            if field in ("handlers", "cases"):
                for part in value:
                    self._block(part.body, per_item)
            elif isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                self._block(value, inner if field == "body" else per_item)

    def _bindings(self, stmt: ast.stmt, per_item: bool) -> None:
        added = _slot_increment(stmt) if isinstance(stmt, ast.Assign) else None
        if isinstance(stmt, ast.Assign) and added is not None:
            # `counts[k] = counts.get(k, 0) + 1` is `counts[k] += 1`: the key only picks a slot.
            self._bind_target(stmt.targets[0], self.taint_of(added), None, per_item)
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                self._bind_target(target, self.taint_of(stmt.value), stmt.value, per_item)
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            self._bind_target(stmt.target, self.taint_of(stmt.value), stmt.value, per_item)
        elif isinstance(stmt, ast.AugAssign):
            taint = self.taint_of(stmt.value)
            if per_item and isinstance(stmt.value, (ast.List, ast.Tuple, ast.ListComp)):
                taint = _join((taint, _as(taint, Kind.PER_ITEM)))  # `out += [x]` collects
            self._bind_target(stmt.target, taint, None, per_item)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            self._bind_target(stmt.target, self.taint_of(stmt.iter), None, per_item=False)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                if item.optional_vars is not None:
                    taint = self.taint_of(item.context_expr)
                    self._bind_target(item.optional_vars, taint, None, per_item)
        elif isinstance(stmt, ast.Match):
            taint = self.taint_of(stmt.subject)
            for case in stmt.cases:
                for node in ast.walk(case.pattern):
                    for name in (getattr(node, "name", None), getattr(node, "rest", None)):
                        if isinstance(name, str):
                            self.bind(name, taint)

    def _bind_target(
        self, target: ast.expr, taint: _Taint, value: ast.expr | None, per_item: bool
    ) -> None:
        if isinstance(target, ast.Name):
            self.bind(target.id, taint)
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = value.elts if isinstance(value, (ast.Tuple, ast.List)) else None
            if values is None or len(values) != len(target.elts) or any(
                    isinstance(v, ast.Starred) for v in values):
                values = None
            for i, element in enumerate(target.elts):
                part = values[i] if values else None
                self._bind_target(element, self.taint_of(part) if part else taint, part, per_item)
        elif isinstance(target, ast.Starred):
            self._bind_target(target.value, taint, None, per_item)
        elif isinstance(target, (ast.Subscript, ast.Attribute)):
            self._store_into(target, taint, per_item)

    def _store_into(self, target: ast.Subscript | ast.Attribute, taint: _Taint,
                    per_item: bool) -> None:
        """``out[i] = v`` or ``obj.x = v``: the container now holds ``v``."""
        root = _root_name(target)
        if root is None:
            return
        stored = taint
        if isinstance(target, ast.Subscript):
            if per_item:  # one entry per image
                stored = _join((stored, _as(stored, Kind.PER_ITEM)))
            # A private key only picks the bucket (`counts[label] += 1` is a histogram).
            stored = _join((stored, _as(self.taint_of(target.slice), Kind.REDUCED)))
        self.bind(root, stored)

    def _call_effects(self, call: ast.Call, per_item: bool) -> None:
        """What a call does to its receiver: a list collects, a model learns."""
        arg_taint = _join(self.taint_of(a) for a in _call_args(call))
        func = call.func
        if isinstance(func, ast.Attribute) and func.attr in MUTATORS:
            root = _root_name(func.value)
            if root is not None and arg_taint.kind:
                extra = _as(arg_taint, Kind.PER_ITEM) if per_item else _CLEAN
                self.bind(root, _join((arg_taint, extra)))
            return
        if arg_taint.kind >= Kind.PER_ITEM:
            for name in self._learners(call):
                self.bind(name, _as(arg_taint, Kind.MODEL))

    def _learners(self, call: ast.Call) -> list[str]:
        """Names that may keep state from a call fed with per-image data."""
        func = call.func
        if isinstance(func, ast.Name):
            if func.id in _BUILTIN_NAMES or func.id in self.aliases:
                return []
            called = [] if func.id in self.defs else [func.id]  # model(images)
        elif isinstance(func, ast.Attribute):
            root = _root_name(func.value)
            if root is None or root in self.aliases:
                return []  # np.mean(images) keeps nothing
            called = [root] if func.attr in FIT_METHODS else []  # model.fit(images)
        else:
            return []
        passed = [arg.id for arg in call.args  # train(model, images)
                  if isinstance(arg, ast.Name) and self.env.get(arg.id, _CLEAN).kind <= Kind.MODEL]
        return called + passed

    # -- expressions --------------------------------------------------------

    def taint_of(self, node: ast.AST) -> _Taint:
        """Taint of an expression under the current bindings."""
        if isinstance(node, ast.Name):
            return self.env.get(node.id, _CLEAN)
        if isinstance(node, ast.Constant):
            return _CLEAN
        if isinstance(node, ast.Attribute):
            return self._attribute(node)
        if isinstance(node, ast.Subscript):
            return _join((self.taint_of(node.value), _demote(self.taint_of(node.slice))))
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, _COMPREHENSIONS):
            return self._comprehension(node)
        if isinstance(node, ast.NamedExpr):
            taint = self.taint_of(node.value)
            self._bind_target(node.target, taint, node.value, per_item=False)
            return taint
        if isinstance(node, ast.Lambda):
            return self.taint_of(node.body)
        parts = _join(self.taint_of(c) for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr))
        return parts if isinstance(node, _PASS_THROUGH) else _demote(parts)

    def _attribute(self, node: ast.Attribute) -> _Taint:
        base = self.taint_of(node.value)
        if node.attr in COUNT_ATTRS:
            return _as(base, Kind.COUNT)
        if node.attr in META_ATTRS:
            return _as(base, Kind.REDUCED)
        return base  # images.T, images.data: still the asset

    def _call(self, node: ast.Call) -> _Taint:
        func = node.func
        receiver = self.taint_of(func.value if isinstance(func, ast.Attribute) else func)
        args = [self.taint_of(a) for a in _call_args(node)]
        inputs = _join([receiver, *args])
        if not inputs.kind:
            return _CLEAN
        qual = qualname(func, self.aliases)
        method = func.attr if isinstance(func, ast.Attribute) else None
        on_module = isinstance(func, ast.Attribute) and _root_name(func) in self.aliases
        if qual == "len" or (method in COUNT_METHODS and not on_module):
            return _as(inputs, Kind.COUNT)
        if is_reducer(node, qual, None if on_module else method):
            return _as(inputs, Kind.REDUCED)
        if method in PRIVATE_WRAPPERS:  # Opacus returns the model (and loader) wrapped for DP
            return _as(inputs, Kind.MODEL)
        if receiver.kind == Kind.RAW and method in VIEW_METHODS and not on_module:
            return _join([receiver, *map(_demote, args)])
        if qual in COPY_FUNCS:
            return _join(args)
        return _demote(inputs)

    def _comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> _Taint:
        """One element per image when any loop of the comprehension visits the images."""
        base, visited = _CLEAN, _CLEAN
        for gen in node.generators:
            source = self.taint_of(gen.iter)
            self._bind_target(gen.target, source, None, per_item=False)
            if source.kind in _ITEM_KINDS:
                visited = _join((visited, source))
            elif source.kind == Kind.MODEL:
                base = _join((base, source))
            base = _join([base, *(_demote(self.taint_of(cond)) for cond in gen.ifs)])
        if isinstance(node, ast.DictComp):
            element = _join((self.taint_of(node.key), self.taint_of(node.value)))
        else:
            element = self.taint_of(node.elt)
        return _join((base, element, _as(visited, Kind.PER_ITEM)))


def _assets_named(taint: _Taint) -> str:
    return " and ".join(f"`{name}`" for name in sorted(taint.assets)) or "a private asset"


def _return_flags(analysis: _TaintAnalysis, value: ast.expr) -> Iterator[Flag]:
    """Judge a returned value; each entry of a returned dict, list or tuple on its own."""
    if isinstance(value, ast.Dict):
        for part in [*value.keys, *value.values]:
            if part is not None:
                yield from _return_flags(analysis, part)
        return
    if isinstance(value, (ast.List, ast.Tuple, ast.Set)):
        for element in value.elts:
            inner = element.value if isinstance(element, ast.Starred) else element
            yield from _return_flags(analysis, inner)
        return
    taint, line, code = analysis.taint_of(value), value.lineno, snippet(value)
    if taint.kind == Kind.RAW:
        what = "itself" if code in taint.assets else f"or a slice or copy of it (`{code}`)"
        yield Flag("raw-asset-return", "high", line,
                   f"returns private asset {_assets_named(taint)} {what} at line {line}; "
                   "the data would leave the datasite as it is")
    elif taint.kind == Kind.PER_ITEM:
        yield Flag("per-image-return", "medium", line,
                   f"returns values computed per image from asset {_assets_named(taint)} "
                   f"(line {line}) in `{code}`: e.g. predictions or per-sample losses; "
                   "aggregate before returning")
    elif taint.kind == Kind.MODEL:
        yield Flag("model-weights", "info", line,
                   f"returns model weights trained on private data in `{code}` at line "
                   f"{line} (can memorise images; DP bounds this)")


def _find_function(tree: ast.Module, name: str | None) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The submitted function: ``name`` if given, else the first one defined at top level."""
    top = [node for node in tree.body if isinstance(node, _FUNCTIONS)]
    nested = [node for node in ast.walk(tree) if isinstance(node, _FUNCTIONS)]
    return next((node for node in top + nested if name is None or node.name == name), None)


def _parameters(func: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    args = func.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return [arg.arg for arg in every if arg is not None]


def review_returns(
    tree: ast.Module, asset_args: Collection[str], function_name: str | None
) -> list[Flag]:
    """Flags for the values the submitted function returns; see :func:`domains.review.review_code`."""
    func = _find_function(tree, function_name)
    if func is None:
        wanted = f"function `{function_name}`" if function_name else "a function definition"
        return [Flag("function-missing", "medium", 1,
                     f"could not find {wanted} in the code, so its return values were not "
                     "checked; read them yourself")]
    if isinstance(asset_args, str):  # a lone name, not a collection of letters
        asset_args = (asset_args,)
    analysis = _TaintAnalysis(func, asset_args or _parameters(func), import_aliases(tree))
    return [flag for value in _returned_values(func) for flag in _return_flags(analysis, value)]

