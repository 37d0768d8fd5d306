"""Taint analysis: which values of a submitted function come from the private data, and how.

:class:`TaintAnalysis` follows every value derived from the asset arguments
through assignments, slicing, loops, comprehensions, calls of the code's own
functions and lambdas (their parameters take the arguments' taint), default
arguments, class bodies and objects mutated in place (``w.data[:] = x`` taints
the model ``w`` came from). What a taint records is in
:mod:`domains.review.taint_kinds`, which expressions pick a few images in
:mod:`domains.review.picks`, what library calls do in
:mod:`domains.review.calls`; how the findings become flags is in
:mod:`domains.review.leaks`.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable

from domains.review.calls import FIT_METHODS, MUTATING_FUNCS, MUTATORS, is_inplace
from domains.review.names import Resolver
from domains.review.syntax import (
    FUNCTIONS,
    call_args,
    leaves_early,
    own_exprs,
    returned_values,
    root_name,
    slot_increment,
    target_names,
)
from domains.review.taint_kinds import CLEAN, INDEX, ITEM_KINDS, Kind, Taint, join, picked, relabel, unpicked
from domains.review.values import Scope, ValueTaint

_MAX_PASSES = 50
_BUILTIN_NAMES = frozenset(dir(builtins))


class TaintAnalysis(ValueTaint):
    """Which names in the submission hold values derived from the asset arguments.

    Flow-insensitive on purpose: every binding of a name joins into one taint,
    and the code is re-read until nothing changes. That is blind to order (see
    the known limits in :mod:`domains.review.code_review`) but cannot be fooled by it.
    """

    def __init__(self, body: list[ast.stmt], assets: Iterable[str], resolver: Resolver) -> None:
        super().__init__(assets, resolver)
        self.owners: dict[str, set[str]] = {}  # name -> the names its value was read from
        for _ in range(_MAX_PASSES):
            self._changed = False
            self._block(body, Scope())
            if not self._changed:
                break

    def _own(self, name: str, value: ast.expr | None) -> None:
        root = root_name(value) if value is not None else None
        if not root or root == name or self.resolver.is_module(ast.Name(id=root)):
            return
        if root not in self.owners.setdefault(name, set()):
            self.owners[name].add(root)
            self._changed = True

    def _mutate(self, name: str, taint: Taint) -> None:
        """Writing into ``name`` writes into whatever it was read from (aliases share state)."""
        seen: set[str] = set()
        stack = [name]
        while stack:
            current = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            self.bind(current, taint)
            stack.extend(self.owners.get(current, ()))

    # -- statements ---------------------------------------------------------

    def _block(self, body: list[ast.stmt], scope: Scope) -> None:
        for stmt in body:
            self._stmt(stmt, scope)

    def _stmt(self, stmt: ast.stmt, scope: Scope) -> None:
        if isinstance(stmt, FUNCTIONS):
            self._function(stmt, scope)
            return
        if isinstance(stmt, ast.ClassDef):
            self._class(stmt, scope)
            return
        for expr in own_exprs(stmt):
            self.taint_of(expr)
            for call in ast.walk(expr):
                if isinstance(call, ast.Call):
                    self._call_effects(call, scope)
        self._bindings(stmt, scope)
        inner = scope
        if isinstance(stmt, (ast.For, ast.AsyncFor)):
            inner = self._loop_scope(stmt, scope)
        elif isinstance(stmt, (ast.If, ast.While, ast.Match)):
            inner = scope.guarded()
        for field, value in ast.iter_fields(stmt):
            if field in ("handlers", "cases"):
                for part in value:
                    self._block(part.body, inner if field == "cases" else scope)
            elif isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                self._block(value, inner if field == "body" else scope.guarded())

    def _function(self, stmt: ast.FunctionDef | ast.AsyncFunctionDef, scope: Scope) -> None:
        for expr in [*stmt.decorator_list, *stmt.args.defaults,
                     *[d for d in stmt.args.kw_defaults if d is not None]]:
            self.taint_of(expr)
        self._bind_defaults(stmt.args)
        self._block(stmt.body, Scope())
        self.bind(stmt.name, join(self.taint_of(v) for v in returned_values(stmt)))

    def _class(self, stmt: ast.ClassDef, scope: Scope) -> None:
        """A class holds what its body binds: ``class C: x = images`` makes ``C.x`` private."""
        self._block(stmt.body, scope)
        bound = {n.id for n in ast.walk(stmt) if isinstance(n, ast.Name)
                 and isinstance(n.ctx, ast.Store)}
        bound |= {s.name for s in stmt.body if isinstance(s, FUNCTIONS)}
        self.bind(stmt.name, join(self.env.get(name, CLEAN) for name in bound))

    def _loop_scope(self, stmt: ast.For | ast.AsyncFor, scope: Scope) -> Scope:
        source = self.taint_of(stmt.iter)
        if source.kind not in ITEM_KINDS:
            return scope
        each = frozenset(f"each {n}" for n in target_names(stmt.target))
        if source.picks or leaves_early(stmt.body) or self.picks.partial(stmt.iter):
            return scope._replace(per_item=True)  # it does not visit every image
        return Scope(per_item=True, full=scope.full | each)

    def _bindings(self, stmt: ast.stmt, scope: Scope) -> None:
        added = slot_increment(stmt) if isinstance(stmt, ast.Assign) else None
        if isinstance(stmt, ast.Assign) and added is not None:
            # `counts[k] = counts.get(k, 0) + 1` is `counts[k] += 1`: the key only picks a slot.
            self._bind_target(stmt.targets[0], unpicked(self.taint_of(added), scope.full), None,
                              scope)
        elif isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                self._bind_target(target, self.taint_of(stmt.value), stmt.value, scope)
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            self._bind_target(stmt.target, self.taint_of(stmt.value), stmt.value, scope)
        elif isinstance(stmt, ast.AugAssign):
            taint = self.taint_of(stmt.value)
            if scope.per_item and isinstance(stmt.value, (ast.List, ast.Tuple, ast.ListComp)):
                taint = join((taint, relabel(taint, Kind.PER_ITEM)))  # `out += [x]` collects
            self._bind_target(stmt.target, unpicked(taint, scope.full), None, scope)
        elif isinstance(stmt, (ast.For, ast.AsyncFor)):
            source = self.taint_of(stmt.iter)
            if source.kind in ITEM_KINDS:
                each = frozenset(f"each {n}" for n in target_names(stmt.target))
                source = picked(source, each | INDEX if self.picks.partial(stmt.iter) else each)
            self._bind_target(stmt.target, source, None, Scope(), loop=stmt.iter)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            for item in stmt.items:
                if item.optional_vars is not None:
                    taint = self.taint_of(item.context_expr)
                    self._bind_target(item.optional_vars, taint, item.context_expr, scope)
        elif isinstance(stmt, ast.Match):
            self._match(stmt)

    def _match(self, stmt: ast.Match) -> None:
        taint = self.taint_of(stmt.subject)
        for case in stmt.cases:
            for node in ast.walk(case.pattern):
                for name in (getattr(node, "name", None), getattr(node, "rest", None)):
                    if isinstance(name, str):
                        self.bind(name, taint)

    def _bind_target(self, target: ast.expr, taint: Taint, value: ast.expr | None,
                     scope: Scope, loop: ast.expr | None = None) -> None:
        if isinstance(target, ast.Name):
            self.bind(target.id, taint)
            self._own(target.id, value if value is not None else loop)
        elif isinstance(target, (ast.Tuple, ast.List)):
            values = value.elts if isinstance(value, (ast.Tuple, ast.List)) else None
            if values is None or len(values) != len(target.elts) or any(
                    isinstance(v, ast.Starred) for v in values):
                values = None
            if values is None and loop is None and self._is_asset(value):
                taint = picked(taint, INDEX)  # `first, *rest = images`: one image each
            for i, element in enumerate(target.elts):
                part = values[i] if values else None
                self._bind_target(element, self.taint_of(part) if part else taint, part, scope,
                                  loop)
        elif isinstance(target, ast.Starred):
            self._bind_target(target.value, taint, None, scope, loop)
        elif isinstance(target, (ast.Subscript, ast.Attribute)):
            self._store_into(target, taint, scope)

    def _is_asset(self, value: ast.expr | None) -> bool:
        return value is not None and root_name(value) in self.assets

    def _store_into(self, target: ast.Subscript | ast.Attribute, taint: Taint,
                    scope: Scope) -> None:
        """``out[i] = v`` or ``obj.x = v``: the container (and what it came from) now holds ``v``."""
        root = root_name(target)
        if root is None:
            return
        stored = taint
        if isinstance(target, ast.Subscript):
            if scope.per_item:  # one entry per image
                stored = join((stored, relabel(stored, Kind.PER_ITEM)))
            # A private key only picks the bucket (`counts[label] += 1` is a histogram).
            stored = join((stored, relabel(self.taint_of(target.slice), Kind.REDUCED)))
        self._mutate(root, unpicked(stored, scope.full))

    def _call_effects(self, call: ast.Call, scope: Scope) -> None:
        """What a call does to its receiver: a list collects, a model learns, a tensor is overwritten."""
        arg_taint = join(self.taint_of(a) for a in call_args(call))
        func = call.func
        method = func.attr if isinstance(func, ast.Attribute) else None
        on_module = isinstance(func, ast.Attribute) and self.resolver.is_module(func.value)
        if method is not None and not on_module and (method in MUTATORS or is_inplace(method)):
            root = root_name(func.value) if isinstance(func, ast.Attribute) else None
            if root is not None and arg_taint.kind:
                collects = method in MUTATORS and scope.per_item
                extra = relabel(arg_taint, Kind.PER_ITEM) if collects else CLEAN
                self._mutate(root, unpicked(join((arg_taint, extra)), scope.full))
            return
        for name in sorted(self.resolver.names(func) & set(MUTATING_FUNCS)):
            self._mutate_argument(call, MUTATING_FUNCS[name])
        if arg_taint.kind >= Kind.PER_ITEM:
            for learner in self._learners(call):
                self.bind(learner, relabel(arg_taint, Kind.MODEL))

    def _mutate_argument(self, call: ast.Call, position: int) -> None:
        """``np.copyto(dst, images)``, ``vector_to_parameters(v, model.parameters())``."""
        if len(call.args) <= position:
            return
        root = root_name(call.args[position])
        others = join(self.taint_of(a) for i, a in enumerate(call.args) if i != position)
        if root is not None and others.kind:
            self._mutate(root, others)

    def _learners(self, call: ast.Call) -> list[str]:
        """Names that may keep state from a call fed with per-image data."""
        func = call.func
        if isinstance(func, ast.Name):
            if func.id in _BUILTIN_NAMES or self.resolver.is_module(func):
                return []
            called = [] if func.id in self.functions else [func.id]  # model(images)
        elif isinstance(func, ast.Attribute):
            root = root_name(func.value)
            if root is None or self.resolver.is_module(func.value):
                return []  # np.mean(images) keeps nothing
            called = [root] if func.attr in FIT_METHODS else []  # model.fit(images)
        else:
            return []
        passed = [arg.id for arg in call.args  # train(model, images)
                  if isinstance(arg, ast.Name) and self.env.get(arg.id, CLEAN).kind <= Kind.MODEL]
        return called + passed
