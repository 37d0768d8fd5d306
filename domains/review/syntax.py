"""Small questions about submitted code's syntax that the taint analysis asks.

Which variable an expression reads through, which expressions belong to a
statement, what a function returns, whether a loop can stop early: each is a
pure function of the :mod:`ast`, kept apart from the analysis that uses it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator

FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def root_name(node: ast.expr) -> str | None:
    """``w`` for ``w.data[0]`` or ``w.grad.add_``: the variable an expression reads through."""
    while True:
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            node = node.func.value
        else:
            break
    return node.id if isinstance(node, ast.Name) else None


def call_args(call: ast.Call) -> list[ast.expr]:
    positional = [a.value if isinstance(a, ast.Starred) else a for a in call.args]
    return positional + [kw.value for kw in call.keywords]


def target_names(target: ast.expr) -> frozenset[str]:
    return frozenset(n.id for n in ast.walk(target) if isinstance(n, ast.Name))


def slot_increment(stmt: ast.Assign) -> ast.expr | None:
    """``v`` in ``d[k] = d[k] + v``, ``d[k] = d.get(k, 0) + v`` or ``x = x + v``, else None."""
    target, value = stmt.targets[0], stmt.value
    if len(stmt.targets) != 1 or not isinstance(value, ast.BinOp):
        return None
    if not isinstance(target, (ast.Subscript, ast.Name)):
        return None
    read = value.left
    same = ast.unparse(read) == ast.unparse(target) or (
        isinstance(target, ast.Subscript)
        and isinstance(read, ast.Call) and isinstance(read.func, ast.Attribute)
        and read.func.attr == "get" and bool(read.args)
        and ast.unparse(read.func.value) == ast.unparse(target.value)
        and ast.unparse(read.args[0]) == ast.unparse(target.slice))
    return value.right if same else None


def own_exprs(stmt: ast.stmt) -> Iterator[ast.expr]:
    """Expressions of ``stmt`` itself, not of the statements nested in it."""
    for _, value in ast.iter_fields(stmt):
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, ast.expr):
                yield item
            elif isinstance(item, ast.withitem):
                yield item.context_expr


def returned_values(func: ast.AST) -> list[ast.expr]:
    """Values ``func`` returns or yields, leaving out nested functions and classes."""
    found: list[ast.expr] = []
    stack = list(ast.iter_child_nodes(func))
    while stack:
        node = stack.pop()
        if isinstance(node, (*FUNCTIONS, ast.ClassDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom)) and node.value is not None:
            found.append(node.value)
        stack.extend(ast.iter_child_nodes(node))
    return found


def leaves_early(body: list[ast.stmt]) -> bool:
    """A ``break`` or ``return`` in a loop body (not in a nested loop) skips the other images."""
    stack: list[ast.AST] = list(body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Break, ast.Return)):
            return True
        if not isinstance(node, (ast.For, ast.AsyncFor, ast.While, *FUNCTIONS, ast.Lambda,
                                 ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))
    return False
