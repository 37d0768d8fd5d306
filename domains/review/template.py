"""Recognising medsyft's own job code exactly, and flagging code that only looks like it.

medsyft submits two functions to every datasite (``JOB_TEMPLATE`` and
``RELEASE_TEMPLATE`` of :mod:`domains.runtime.templates`): each only imports
the datasite's installed runtime and returns what it computes. For that
exact code the review says what the runtime does (an ``info`` line) instead of
judging the one ``return`` it can see. Anything else that *looks* like a
medsyft job (its name, its docstring, the runtime import) but differs in any
statement gets a high ``medsyft-lookalike`` flag: the look proves nothing, and
a lookalike is exactly how hostile code would ask for a quick approval.

Equality is structural: the function's parameters and its body (docstring left
out) must give the same ``ast.dump`` as the template's, and nothing may run
beside it but the template file's own imports. The templates are read from
:mod:`domains.runtime.templates`, the module the orchestrator submits from,
so the review and the submission cannot drift apart.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache

from domains.review.bindings import dotted
from domains.review.calls import TRUSTED_RUNTIMES
from domains.review.catalog import Flag
from domains.review.names import Resolver, snippet
from domains.runtime.templates import evaluate_source, job_source, release_source

# runtime entry point -> the template as submitted (any job id: the body does not use it).
_SOURCES = {
    "domains.runtime.entry.run_job": job_source(job_id="000000", limit=1),
    "domains.runtime.entry.run_release": release_source(job_id="000000"),
    "domains.runtime.entry.run_evaluation": evaluate_source(eval_id="000000"),
}
_ENTRY_NAMES = frozenset(name.rsplit(".", 1)[1] for name in _SOURCES)
_DECORATORS = frozenset({"sy.syft_function", "syft.syft_function"})
_DECORATOR_NODES = (ast.Call, ast.Name, ast.Attribute, ast.Constant, ast.keyword, ast.Load)

_Function = ast.FunctionDef | ast.AsyncFunctionDef


def _without_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        return body[1:]
    return body


@cache
def _template(runtime: str) -> ast.FunctionDef:
    """The template's function, its docstring left out."""
    (function,) = [s for s in ast.parse(_SOURCES[runtime]).body if isinstance(s, ast.FunctionDef)]
    function.body = _without_docstring(function.body)
    return function


@cache
def _preamble() -> frozenset[str]:
    """The template files' imports, which may stand beside the function."""
    return frozenset(ast.dump(stmt) for source in _SOURCES.values()
                     for stmt in ast.parse(source).body
                     if isinstance(stmt, (ast.Import, ast.ImportFrom)))


@cache
def _docstring_openings() -> tuple[str, ...]:
    """The first words of the templates' docstrings, which a lookalike may copy."""
    openings = []
    for source in _SOURCES.values():
        (function,) = [s for s in ast.parse(source).body if isinstance(s, ast.FunctionDef)]
        openings.append(" ".join((ast.get_docstring(function) or "").split()[:5]))
    return tuple(o for o in openings if o)


def template_flags(tree: ast.Module, function: _Function | None, resolver: Resolver) -> Iterator[Flag]:
    """The ``info`` line for medsyft's exact templates, a high flag for lookalikes."""
    reason = _medsyft_look(tree, function, resolver)
    if reason is None or function is None:
        return
    differences = {runtime: _difference(tree, function, _template(runtime))
                   for runtime in _SOURCES}
    for runtime, difference in differences.items():
        if difference is None:
            line = _without_docstring(function.body)[-1].lineno
            yield Flag("medsyft-runtime", "info", line,
                       f"calls {runtime}: {TRUSTED_RUNTIMES[runtime]} (line {line})")
            return
    mentioned = [r for r in _SOURCES if r.rsplit(".", 1)[1] in ast.unparse(function)]
    difference = differences[(mentioned or list(_SOURCES))[0]]
    yield Flag("medsyft-lookalike", "high", function.lineno,
               f"looks like a medsyft job but differs from medsyft's template: {difference} "
               f"({reason}; only the exact template runs nothing but medsyft's installed "
               "runtime, so review this as any other code)")


def _medsyft_look(tree: ast.Module, function: _Function | None, resolver: Resolver) -> str | None:
    """Why the code could pass for medsyft's, or None."""
    if function is not None and function.name.lower().startswith("medsyft"):
        return f"its name `{function.name}` is medsyft's"
    docs = [ast.get_docstring(tree) or ""]
    if function is not None:
        docs.append(ast.get_docstring(function) or "")
    text = " ".join(" ".join(docs).split())
    if "medsyft" in text.lower() or any(opening in text for opening in _docstring_openings()):
        return "its docstring is medsyft's"
    for node in ast.walk(tree):
        if isinstance(node, (ast.Name, ast.Attribute, ast.Import, ast.ImportFrom)):
            names = _imported(node) if isinstance(node, (ast.Import, ast.ImportFrom)) else (
                resolver.names(node) | {getattr(node, "id", "")})
            if any(n.startswith("domains") or n in _ENTRY_NAMES for n in names):
                return "it uses medsyft's own code"
    return None


def _imported(node: ast.Import | ast.ImportFrom) -> set[str]:
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    return {node.module or ""}


def _difference(tree: ast.Module, function: _Function, template: ast.FunctionDef) -> str | None:
    """The first way ``function`` (and what runs beside it) differs from ``template``."""
    beside = _beside(tree, function)
    if beside is not None:
        return f"line {beside.lineno}: `{snippet(beside)}` runs beside the function"
    if isinstance(function, ast.AsyncFunctionDef) or function.returns is not None:
        return "its signature is not the template's"
    for decorator in function.decorator_list:
        plain = isinstance(decorator, ast.Call) and dotted(decorator.func) in _DECORATORS and all(
            isinstance(n, _DECORATOR_NODES) for n in ast.walk(decorator))
        if not plain:
            return f"line {decorator.lineno}: the decorator `@{snippet(decorator)}` is not the template's"
    if ast.dump(function.args) != ast.dump(template.args):
        return (f"its parameters are ({ast.unparse(function.args)}) instead of "
                f"({ast.unparse(template.args)})")
    return _body_difference(_without_docstring(function.body), template.body)


def _beside(tree: ast.Module, function: _Function) -> ast.stmt | None:
    """A top-level statement other than the function, its module docstring and the preamble."""
    for index, stmt in enumerate(tree.body):
        docstring = index == 0 and not _without_docstring([stmt])
        if stmt is not function and not docstring and ast.dump(stmt) not in _preamble():
            return stmt
    return None


def _body_difference(body: list[ast.stmt], template: list[ast.stmt]) -> str | None:
    for index, (stmt, expected) in enumerate(zip(body, template, strict=False)):
        if ast.dump(stmt) != ast.dump(expected):
            return (f"line {stmt.lineno}: `{snippet(stmt)}` where the template has "
                    f"`{snippet(template[index])}`")
    if len(body) > len(template):
        extra = body[len(template)]
        return f"line {extra.lineno}: `{snippet(extra)}` is not in the template"
    if len(body) < len(template):
        return f"the template's `{snippet(template[len(body)])}` is missing"
    return None
