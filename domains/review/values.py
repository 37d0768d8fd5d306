"""Taint of expressions: how revealing the value of one expression in submitted code is.

:class:`ValueTaint` holds the taint of every name and computes the taint of any
expression from it: attributes, subscripts (and whether they pick a few
images), calls of library functions and of the code's own functions and
lambdas, comprehensions. :class:`domains.review.taint.TaintAnalysis` extends it
with statements: what assignments, loops and mutations bind.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from typing import NamedTuple

from domains.review.calls import (
    COPY_FUNCS,
    COUNT_ATTRS,
    COUNT_METHODS,
    META_ATTRS,
    PRIVATE_WRAPPERS,
    VIEW_METHODS,
    is_reducer,
)
from domains.review.names import Resolver
from domains.review.picks import PickRules, call_pick, whole
from domains.review.syntax import call_args, target_names
from domains.review.taint_kinds import (
    CLEAN,
    INDEX,
    ITEM_KINDS,
    Kind,
    Taint,
    demote,
    join,
    picked,
    relabel,
    unpicked,
)

_PASS_THROUGH = (ast.List, ast.Tuple, ast.Set, ast.Dict, ast.BoolOp, ast.IfExp, ast.Starred,
                 ast.Await, ast.Slice)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


class Scope(NamedTuple):
    """Where a statement runs: in a loop over the images, and which loops visit every one."""

    per_item: bool = False
    full: frozenset[str] = frozenset()  # picks removed by accumulating over every iteration

    def guarded(self) -> Scope:
        """Inside an ``if`` (or ``while``) only some iterations reach the code."""
        return self._replace(full=frozenset())


class ValueTaint:
    """The taint of each name, and of any expression built from them.

    ``_bind_target`` is the statements' business (:class:`domains.review.taint.TaintAnalysis`):
    comprehensions and ``:=`` bind names through it.
    """

    def __init__(self, assets: Iterable[str], resolver: Resolver) -> None:
        self.resolver = resolver
        self.assets = frozenset(assets)
        self.env = {name: Taint(Kind.RAW, frozenset({name})) for name in self.assets}
        self.functions = resolver.bindings.functions
        self.picks = PickRules(self.taint_of, resolver)
        self._changed = False

    def bind(self, name: str, taint: Taint) -> None:
        old = self.env.get(name, CLEAN)
        new = join((old, taint))
        if new != old:
            self.env[name] = new
            self._changed = True

    def _bind_target(self, target: ast.expr, taint: Taint, value: ast.expr | None,
                     scope: Scope, loop: ast.expr | None = None) -> None:
        raise NotImplementedError

    def _bind_defaults(self, args: ast.arguments) -> None:
        positional = [*args.posonlyargs, *args.args]
        for arg, default in zip(positional[len(positional) - len(args.defaults):], args.defaults,
                                strict=True):
            self.bind(arg.arg, self.taint_of(default))
        for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            if kw_default is not None:
                self.bind(arg.arg, self.taint_of(kw_default))

    def taint_of(self, node: ast.AST) -> Taint:
        """Taint of an expression under the current bindings."""
        if isinstance(node, ast.Name):
            return self.env.get(node.id, CLEAN)
        if isinstance(node, ast.Constant):
            return CLEAN
        if isinstance(node, ast.Attribute):
            return self._attribute(node)
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        if isinstance(node, _COMPREHENSIONS):
            return self._comprehension(node)
        if isinstance(node, ast.NamedExpr):
            taint = self.taint_of(node.value)
            self._bind_target(node.target, taint, node.value, Scope())
            return taint
        if isinstance(node, ast.Lambda):
            self._bind_defaults(node.args)
            return self.taint_of(node.body)
        children = [self.taint_of(c) for c in ast.iter_child_nodes(node) if isinstance(c, ast.expr)]
        parts = join(children)
        if isinstance(node, ast.BinOp) and parts.kind == Kind.COUNT and any(
                c.kind == Kind.REDUCED for c in children):
            return relabel(parts, Kind.REDUCED)  # total / len(images) is a statistic, not a count
        return parts if isinstance(node, _PASS_THROUGH) else demote(parts)

    def _attribute(self, node: ast.Attribute) -> Taint:
        base = self.taint_of(node.value)
        if node.attr in COUNT_ATTRS:
            return relabel(base, Kind.COUNT)
        if node.attr in META_ATTRS:
            return relabel(base, Kind.REDUCED)
        return base  # images.T, images.data: still the asset

    def _subscript(self, node: ast.Subscript) -> Taint:
        base = self.taint_of(node.value)
        taint = join((base, demote(self.taint_of(node.slice))))
        if base.kind not in (Kind.PER_ITEM, Kind.RAW):
            return taint
        if self.picks.moves_axes(node.value):  # images.T[..., 0]: the image axis may be anywhere
            return taint if whole(node.slice) else picked(
                taint, self.taint_of(node.slice).picks or INDEX)
        selector = node.slice.elts[0] if isinstance(node.slice, ast.Tuple) and \
            node.slice.elts else node.slice
        if self.picks.selects(selector):
            return picked(taint, self.taint_of(selector).picks or INDEX)
        if isinstance(selector, ast.Slice):  # images[start:start + 64] covers, it does not pick
            taint = join((base, demote(self.taint_of(node.slice))._replace(picks=frozenset())))
        return taint

    def _call(self, node: ast.Call) -> Taint:
        func = node.func
        local = self._local_call(node)
        if local is not None:
            return local
        receiver = self.taint_of(func.value if isinstance(func, ast.Attribute) else func)
        args = [self.taint_of(a) for a in call_args(node)]
        inputs = join([receiver, *args])
        if not inputs.kind:
            return CLEAN
        names = self.resolver.names(func)
        qual = min(names) if names else None
        method = func.attr if isinstance(func, ast.Attribute) else None
        on_module = isinstance(func, ast.Attribute) and self.resolver.is_module(func.value)
        if qual == "len" or (method in COUNT_METHODS and not on_module):
            return relabel(inputs, Kind.COUNT)
        made_by = self.resolver.names(func.func) if isinstance(func, ast.Call) else frozenset()
        pick = call_pick(node, names | made_by, None if on_module else method)  # itemgetter(0)(x)
        if pick == "element":  # next(iter(images)), rng.choice(images), images.take(0)
            return picked(inputs, INDEX)
        if pick == "position":  # images.argmax(): indexing with it picks one image
            return picked(demote(inputs), INDEX)
        if is_reducer(node, qual, None if on_module else method):
            return relabel(inputs, Kind.REDUCED)
        if method in PRIVATE_WRAPPERS:  # Opacus returns the model (and loader) wrapped for DP
            return relabel(inputs, Kind.MODEL)
        if receiver.kind == Kind.RAW and method in VIEW_METHODS and not on_module:
            return join([receiver, *map(demote, args)])
        if qual in COPY_FUNCS:
            return join(args)
        return demote(inputs)

    def _local_call(self, node: ast.Call) -> Taint | None:
        """A call of the code's own function or lambda: its parameters take the arguments."""
        func = node.func
        if isinstance(func, ast.Lambda):
            self._bind_arguments(func.args, node)
            return self.taint_of(func.body)
        if isinstance(func, ast.Name) and func.id in self.functions:
            for definition in self.functions[func.id]:
                self._bind_arguments(definition.args, node)
            return join((self.env.get(func.id, CLEAN),
                         *(self.taint_of(d.body) for d in self.functions[func.id]
                           if isinstance(d, ast.Lambda))))
        return None

    def _bind_arguments(self, params: ast.arguments, call: ast.Call) -> None:
        positional = [*params.posonlyargs, *params.args]
        for param, arg in zip(positional, call.args, strict=False):
            self.bind(param.arg, self.taint_of(arg.value if isinstance(arg, ast.Starred) else arg))
        rest = call.args[len(positional):]
        if params.vararg is not None and rest:
            self.bind(params.vararg.arg, join(self.taint_of(a) for a in rest))
        names = {a.arg for a in [*positional, *params.kwonlyargs]}
        for kw in call.keywords:
            if kw.arg in names:
                self.bind(kw.arg, self.taint_of(kw.value))
            elif params.kwarg is not None:
                self.bind(params.kwarg.arg, self.taint_of(kw.value))

    def _comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp
    ) -> Taint:
        """One element per image when any loop of the comprehension visits the images."""
        base, visited, each = CLEAN, CLEAN, frozenset[str]()
        filtered = any(gen.ifs or self.picks.partial(gen.iter) for gen in node.generators)
        for gen in node.generators:
            source = self.taint_of(gen.iter)
            if source.kind in ITEM_KINDS:
                picks = frozenset(f"each {n}" for n in target_names(gen.target))
                bound = picked(source, picks | INDEX if self.picks.partial(gen.iter) else picks)
                self._bind_target(gen.target, bound, None, Scope(), loop=gen.iter)
                visited, each = join((visited, source)), each | picks
            else:
                self._bind_target(gen.target, source, None, Scope(), loop=gen.iter)
                if source.kind == Kind.MODEL:
                    base = join((base, source))
            base = join([base, *(demote(self.taint_of(cond)) for cond in gen.ifs)])
        if isinstance(node, ast.DictComp):
            element = join((self.taint_of(node.key), self.taint_of(node.value)))
        else:
            element = self.taint_of(node.elt)
        result = join((base, element, relabel(visited, Kind.PER_ITEM)))
        return result if filtered else unpicked(result, each)
