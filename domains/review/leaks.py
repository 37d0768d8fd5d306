"""What leaves the datasite: the submitted function's return values, prints and errors.

:func:`leak_flags` runs :class:`domains.review.taint.TaintAnalysis` over the
submission and flags each channel by which private values could reach the
scientist: the values the function returns or yields, and what it prints, logs,
warns or raises (PySyft keeps a job's printed output and its errors in the
job's logs, which the scientist reads). PySyft runs the whole submission in one
scope, so statements beside the function and helper functions are analysed
with it. The rules, as an owner reads them, are in :mod:`domains.review.code_review`.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator

from domains.review.calls import LOG_METHODS, PRINTERS
from domains.review.catalog import Flag
from domains.review.names import Resolver, parameters, snippet
from domains.review.syntax import FUNCTIONS, call_args, returned_values
from domains.review.taint import TaintAnalysis
from domains.review.taint_kinds import Kind, Taint, join

_OUTPUT = "PySyft shows a job's printed output and error messages to the scientist"


def _assets_named(taint: Taint) -> str:
    return " and ".join(f"`{name}`" for name in sorted(taint.assets)) or "a private asset"


def leak_flags(
    tree: ast.Module,
    function: ast.FunctionDef | ast.AsyncFunctionDef | None,
    asset_args: Collection[str],
    resolver: Resolver,
    function_name: str | None = None,
) -> list[Flag]:
    """Flags for what the submitted function lets out; see :func:`domains.review.code_review.review_code`."""
    if function is None:
        wanted = f"function `{function_name}`" if function_name else "a function definition"
        return [Flag("function-missing", "medium", 1,
                     f"could not find {wanted} in the code, so its return values were not "
                     "checked; read them yourself")]
    if isinstance(asset_args, str):  # a lone name, not a collection of letters
        asset_args = (asset_args,)
    body = [*function.body, *(stmt for stmt in tree.body if stmt is not function)]
    analysis = TaintAnalysis(body, asset_args or parameters(function), resolver)
    # PySyft calls the last definition of the name; judge every one.
    versions = [function, *(stmt for stmt in tree.body if isinstance(stmt, FUNCTIONS)
                            and stmt.name == function.name and stmt is not function)]
    flags = [flag for version in versions for value in returned_values(version)
             for flag in _return_flags(analysis, value)]
    for stmt in body:
        for node in ast.walk(stmt):
            flags.extend(_output_flags(analysis, node))
    return flags


def _return_flags(analysis: TaintAnalysis, value: ast.expr) -> Iterator[Flag]:
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
    assets = _assets_named(taint)
    if taint.kind == Kind.RAW:
        what = "itself" if code in taint.assets else f"or a slice or copy of it (`{code}`)"
        yield Flag("raw-asset-return", "high", line,
                   f"returns private asset {assets} {what} at line {line}; "
                   "the data would leave the datasite as it is")
    elif taint.kind == Kind.PER_ITEM:
        yield Flag("per-image-return", "medium", line,
                   f"returns values computed per image from asset {assets} "
                   f"(line {line}) in `{code}`: e.g. predictions or per-sample losses; "
                   "aggregate before returning")
    elif taint.kind == Kind.REDUCED and taint.picks:
        yield Flag("single-image-return", "medium", line,
                   f"returns a statistic of one image or a few selected images of asset "
                   f"{assets} (line {line}) in `{code}`: a mean of one image describes that "
                   "image; aggregate over the whole asset")
    elif taint.kind == Kind.MODEL:
        yield Flag("model-weights", "info", line,
                   f"returns model weights trained on private data in `{code}` at line "
                   f"{line} (can memorise images; DP bounds this)")


def _output_flags(analysis: TaintAnalysis, node: ast.AST) -> Iterator[Flag]:
    """``print(images[0])``, ``log.info(x)``, ``raise ValueError(images)``, ``assert ..., x``."""
    if isinstance(node, ast.Call) and _is_output(analysis, node):
        taint, verb = join(analysis.taint_of(a) for a in call_args(node)), "prints or logs"
    elif isinstance(node, ast.Raise) and node.exc is not None:
        taint, verb = analysis.taint_of(node.exc), "raises an error carrying"
    elif isinstance(node, ast.Assert) and node.msg is not None:
        taint, verb = analysis.taint_of(node.msg), "fails an assertion with"
    else:
        return
    revealing = taint.kind in (Kind.RAW, Kind.PER_ITEM) or (
        taint.kind == Kind.REDUCED and bool(taint.picks))
    if revealing:
        line = getattr(node, "lineno", 1)
        severity = "high" if taint.kind == Kind.RAW else "medium"
        yield Flag("log-leak", severity, line,
                   f"{verb} values of asset {_assets_named(taint)} in `{snippet(node)}` at line "
                   f"{line} ({_OUTPUT})")


def _is_output(analysis: TaintAnalysis, call: ast.Call) -> bool:
    names = analysis.resolver.names(call.func)
    if names & PRINTERS:
        return True
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr not in LOG_METHODS:
        return False
    # logger.info(x) counts; np.log(x) and images.log() compute
    return not analysis.resolver.is_module(func.value) and not analysis.taint_of(func.value).kind
