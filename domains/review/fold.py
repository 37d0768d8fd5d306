"""Constant folding for the review: the strings and numbers code spells out without running.

:class:`ConstantFolder` evaluates expressions built from constants, through the
names they are bound to (``n = "sys" + "tem"``), f-strings, slicing, known pure
functions (``bytes.fromhex``, ``base64.b64decode``, ``chr``...), string
methods and comprehensions over constants, with the operations of
:mod:`domains.review.strings`. A value it cannot evaluate is unknown (None).
Evaluation is bounded (``_FOLD_BUDGET`` steps per review), so hostile code
cannot make the review itself slow.
"""

from __future__ import annotations

import ast
from typing import Any

from domains.review import strings
from domains.review.bindings import Bindings, elements

_MAX_ELEMENTS = 10_000  # longest constant sequence a comprehension is folded over
_FOLD_BUDGET = 50_000  # steps of constant evaluation per review; past it, values are unknown


class ConstantFolder:
    """The constant-valued half of :class:`domains.review.names.Resolver`.

    Subclasses provide ``imports``, ``bindings`` and ``names`` (what a callee
    stands for, so ``bytes.fromhex`` is recognised however it is spelled).
    """

    imports: dict[str, str]
    bindings: Bindings

    def __init__(self) -> None:
        self._values: dict[ast.AST | str, frozenset[Any] | None] = {}
        self._busy: set[ast.AST | str] = set()
        self._fold_budget = _FOLD_BUDGET

    def names(self, node: ast.AST) -> frozenset[str]:
        raise NotImplementedError

    def values(self, node: ast.AST, env: dict[str, Any] | None = None) -> frozenset[Any] | None:
        """Constants ``node`` may evaluate to (str, bytes, int, tuples), or None if unknown."""
        if env:
            return self._fold(node, env)
        if node in self._values:
            return self._values[node]
        if node in self._busy:
            return None
        self._busy.add(node)
        try:
            result = self._fold(node, {})
        finally:
            self._busy.discard(node)
        self._values[node] = result
        return result

    def texts(self, node: ast.AST) -> frozenset[str] | None:
        """The strings ``node`` may evaluate to (bytes read as UTF-8), or None if unknown."""
        found = self.values(node)
        if found is None:
            return None
        texts = {strings.as_text(v) for v in found}
        return None if None in texts else frozenset(t for t in texts if t is not None)

    def spelled_out(self, node: ast.AST) -> bool:
        """Whether a reader sees the string as written: a literal, or a name bound to literals."""
        if isinstance(node, ast.Constant):
            return True
        if not isinstance(node, ast.Name) or "spelled:" + node.id in self._busy:
            return False
        values = self.bindings.values.get(node.id, [])
        iterables = self.bindings.iters.get(node.id, [])
        self._busy.add("spelled:" + node.id)
        try:
            return bool(values or iterables) and all(
                v is not None and self.spelled_out(v) for v in values) and all(
                elements(it) and all(self.spelled_out(e) for e in elements(it))
                for it in iterables)
        finally:
            self._busy.discard("spelled:" + node.id)

    def _lookup_values(self, name: str) -> frozenset[Any] | None:
        key = "value:" + name
        if key in self._values:
            return self._values[key]
        if key in self._busy or name in self.imports:
            return None
        self._busy.add(key)
        try:
            result = self._bound_values(name)
        finally:
            self._busy.discard(key)
        self._values[key] = result
        return result

    def _bound_values(self, name: str) -> frozenset[Any] | None:
        bound = self.bindings.values.get(name, [])
        iterables = self.bindings.iters.get(name, [])
        if not bound and not iterables:
            return None  # a free name: a builtin or something PySyft passes in
        parts: list[frozenset[Any] | None] = [None if v is None else self.values(v) for v in bound]
        for iterable in iterables:
            sequences = self.values(iterable)
            parts.append(None if sequences is None else frozenset(
                item for seq in sequences if isinstance(seq, str | bytes | tuple) for item in seq))
        if any(p is None for p in parts):
            return None
        found = frozenset().union(*[p for p in parts if p is not None])
        return found if len(found) <= strings.MAX_VALUES else None

    def _fold(self, node: ast.AST, env: dict[str, Any]) -> frozenset[Any] | None:
        self._fold_budget -= 1
        if self._fold_budget < 0:
            return None  # hostile code must not make the review itself slow
        if isinstance(node, ast.Constant):
            value = node.value
            ok = isinstance(value, str | bytes | int) and not isinstance(value, bool)
            return frozenset({value}) if ok else (frozenset({None}) if value is None else None)
        if isinstance(node, ast.Name):
            return frozenset({env[node.id]}) if node.id in env else self._lookup_values(node.id)
        if isinstance(node, ast.JoinedStr):
            return self._fold_fstring(node, env)
        if isinstance(node, ast.BinOp):
            return strings.binary(self.values(node.left, env), type(node.op),
                                  self.values(node.right, env))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Invert)):
            op = (lambda v: -v) if isinstance(node.op, ast.USub) else (lambda v: ~v)
            return strings.combine([self.values(node.operand, env)],
                                   lambda v: op(v) if isinstance(v, int) else strings.UNKNOWN)
        if isinstance(node, ast.Subscript):
            return strings.subscript(self.values(node.value, env), self._fold_index(node.slice, env))
        if isinstance(node, (ast.Tuple, ast.List)):
            if any(isinstance(e, ast.Starred) for e in node.elts):
                return None
            return strings.combine([self.values(e, env) for e in node.elts], lambda *a: tuple(a))
        if isinstance(node, ast.Call):
            return self._fold_call(node, env)
        if isinstance(node, (ast.ListComp, ast.GeneratorExp)):
            return self._fold_comprehension(node, env)
        return None

    def _fold_index(self, node: ast.expr, env: dict[str, Any]) -> frozenset[Any] | None:
        if not isinstance(node, ast.Slice):
            return self.values(node, env)
        bounds = [frozenset({None}) if b is None else self.values(b, env)
                  for b in (node.lower, node.upper, node.step)]
        return strings.combine(bounds, lambda lo, hi, step: ("slice", lo, hi, step))

    def _fold_fstring(self, node: ast.JoinedStr, env: dict[str, Any]) -> frozenset[Any] | None:
        parts: list[frozenset[Any] | None] = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                parts.append(frozenset({str(part.value)}))
            elif isinstance(part, ast.FormattedValue) and part.format_spec is None \
                    and part.conversion in (-1, ord("s")):
                inner = self.values(part.value, env)
                parts.append(None if inner is None else frozenset(
                    str(v) for v in inner if isinstance(v, str | int)))
            else:
                return None
        return strings.combine(parts, lambda *a: "".join(a))

    def _fold_call(self, node: ast.Call, env: dict[str, Any]) -> frozenset[Any] | None:
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            return None
        args = [self.values(a, env) for a in node.args]
        if isinstance(node.func, ast.Attribute):
            receiver = self.values(node.func.value, env)
            if receiver is not None:
                return strings.call_method(receiver, node.func.attr, args)
        func = self.names(node.func)
        if "map" in func and len(node.args) == 2:
            mapped = sorted(self.names(node.args[0]) & set(strings.FUNCTIONS))
            if mapped:
                return strings.combine([args[1]], lambda seq: self._map(mapped[0], seq))
        for name in sorted(func & set(strings.FUNCTIONS)):
            return strings.call_function(name, args)
        return None

    @staticmethod
    def _map(name: str, seq: Any) -> Any:
        if not isinstance(seq, str | bytes | tuple) or len(seq) > _MAX_ELEMENTS:
            return strings.UNKNOWN
        out = []
        for item in seq:
            value = strings.call_function(name, [frozenset({item})])
            if value is None or len(value) != 1:
                return strings.UNKNOWN
            out.append(next(iter(value)))
        return tuple(out)

    def _fold_comprehension(
        self, node: ast.ListComp | ast.GeneratorExp, env: dict[str, Any]
    ) -> frozenset[Any] | None:
        """``[chr(c) for c in (115, 121)]``: one loop over a constant, no condition."""
        if len(node.generators) != 1:
            return None
        gen = node.generators[0]
        if gen.ifs or gen.is_async or not isinstance(gen.target, ast.Name):
            return None
        sequences = self.values(gen.iter, env)
        if sequences is None or len(sequences) != 1:
            return None
        (seq,) = sequences
        if not isinstance(seq, str | bytes | tuple) or len(seq) > _MAX_ELEMENTS:
            return None
        out = []
        for item in seq:
            value = self._fold(node.elt, {**env, gen.target.id: item})
            if value is None or len(value) != 1:
                return None
            out.append(next(iter(value)))
        return frozenset({tuple(out)})
