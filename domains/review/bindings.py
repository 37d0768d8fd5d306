"""What each name of submitted code is bound to, anywhere in the source.

:class:`Bindings` collects, for every name (and ``obj.attr`` chain), the
expressions the code binds it to: assignments, tuple unpacking, ``:=``,
loop targets, default arguments, class attributes, and the arguments of every
call of the code's own functions and lambdas (``run(os)`` binds the parameter
of ``def run(m)`` to ``os``). :class:`domains.review.names.Resolver` reads it to
say what a name stands for; nothing here judges the code.
"""

from __future__ import annotations

import ast
from collections import defaultdict

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_LOOPS = (ast.For, ast.AsyncFor, ast.comprehension)


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of attributes on a bare name, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def elements(node: ast.expr) -> list[ast.expr]:
    return list(node.elts) if isinstance(node, (ast.List, ast.Tuple, ast.Set)) else []


class Bindings:
    """Every expression each name (or ``obj.attr`` chain) is bound to, anywhere in the tree.

    ``None`` in a list means "bound to something the review cannot evaluate".
    """

    def __init__(self, tree: ast.AST) -> None:
        self.values: defaultdict[str, list[ast.expr | None]] = defaultdict(list)
        self.iters: defaultdict[str, list[ast.expr]] = defaultdict(list)
        self.functions: defaultdict[str, list[ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda]]
        self.functions = defaultdict(list)
        for node in ast.walk(tree):
            self._visit(node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                for func in self.functions.get(node.func.id, []):
                    self._call_site(func.args, node)

    def _visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self._target(target, node.value)
            if len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and isinstance(node.value, ast.Lambda):
                self.functions[node.targets[0].id].append(node.value)
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            self._target(node.target, node.value if isinstance(node, ast.AnnAssign) else None)
        elif isinstance(node, ast.NamedExpr):
            self._target(node.target, node.value)
        elif isinstance(node, _LOOPS):
            self._loop_target(node.target, node.iter)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                if item.optional_vars is not None:
                    self._target(item.optional_vars, None)
        elif isinstance(node, (*_FUNCTIONS, ast.Lambda)):
            self._params(node.args)
            if isinstance(node, _FUNCTIONS):
                self.values[node.name].append(None)
                self.functions[node.name].append(node)
        elif isinstance(node, ast.ClassDef):
            self._class(node)
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            self.values[node.name].append(None)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            self.values[node.rest].append(None)

    def _class(self, node: ast.ClassDef) -> None:
        self.values[node.name].append(None)
        for stmt in node.body:  # `class C: o = os` makes `C.o` stand for os
            if isinstance(stmt, ast.Assign):
                for target in stmt.targets:
                    if isinstance(target, ast.Name):
                        self.values[f"{node.name}.{target.id}"].append(stmt.value)

    def _target(self, target: ast.expr, value: ast.expr | None) -> None:
        if isinstance(target, ast.Name):
            self.values[target.id].append(value)
        elif isinstance(target, (ast.Tuple, ast.List)):
            parts = elements(value) if value is not None else []
            pairwise = len(parts) == len(target.elts) and not any(
                isinstance(p, ast.Starred) for p in parts)
            for i, element in enumerate(target.elts):
                self._target(element, parts[i] if pairwise else None)
        elif isinstance(target, ast.Starred):
            self._target(target.value, None)
        elif isinstance(target, ast.Attribute):
            key = dotted(target)
            if key:
                self.values[key].append(value)

    def _loop_target(self, target: ast.expr, iterable: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.iters[target.id].append(iterable)
        else:
            self._target(target, None)

    def _params(self, args: ast.arguments) -> None:
        positional = [*args.posonlyargs, *args.args]
        for arg in [*positional, *args.kwonlyargs, args.vararg, args.kwarg]:
            if arg is not None:
                self.values[arg.arg].append(None)
        for arg, default in zip(positional[len(positional) - len(args.defaults):], args.defaults,
                                strict=True):
            self.values[arg.arg].append(default)
        for arg, kw_default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
            if kw_default is not None:
                self.values[arg.arg].append(kw_default)

    def _call_site(self, args: ast.arguments, call: ast.Call) -> None:
        """``run(os)`` binds the parameter of ``def run(m)`` to ``os``."""
        positional = [*args.posonlyargs, *args.args]
        for param, arg in zip(positional, call.args, strict=False):
            if isinstance(arg, ast.Starred):
                break
            self.values[param.arg].append(arg)
        names = {a.arg for a in [*positional, *args.kwonlyargs]}
        for kw in call.keywords:
            if kw.arg in names:
                self.values[kw.arg].append(kw.value)
