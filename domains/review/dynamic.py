"""Review rules for code that hides what it runs: computed names, dunders, namespaces.

A reader (and this review) can judge ``os.system("ls")``. It cannot judge
``getattr(os, name)`` when ``name`` comes from the data, ``vars(os)[k]``, a
walk through ``().__class__.__base__.__subclasses__()``, or a class whose
``__reduce__`` runs when something unpickles it. Whatever the name turns out
to be, such code can reach every function of the datasite process, so each of
these is ``dynamic-access`` at high severity: "the reviewer cannot see what
runs". Names the review *can* work out (``getattr(os, "sys" + "tem")``) are
also resolved and flagged under their own rule by :mod:`domains.review.rules`;
building a name from pieces is itself flagged here, because it only serves to
hide the name from a human reader.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from domains.review.catalog import INTERNALS, Flag, make_flag
from domains.review.names import IMPORTERS, SourceContext, snippet

# Dunder attributes that only describe or construct ordinary objects.
_PLAIN_DUNDERS = frozenset({"__init__", "__name__", "__qualname__", "__doc__", "__version__",
                            "__len__", "__iter__", "__next__", "__enter__", "__exit__",
                            "__getitem__", "__contains__", "__array__", "__module__",
                            "__call__", "__main__"})
# Dunder methods a class may define without running code behind the reader's back.
_PLAIN_METHODS = _PLAIN_DUNDERS | frozenset({
    "__setitem__", "__repr__", "__str__", "__eq__", "__ne__", "__lt__", "__le__", "__gt__",
    "__ge__", "__hash__", "__bool__", "__add__", "__sub__", "__mul__", "__truediv__",
    "__radd__", "__rmul__", "__neg__", "__post_init__", "__aenter__", "__aexit__"})
_PLAIN_NAMES = frozenset({"__name__", "__doc__", "__debug__", "__class__"})
# Attributes that reach frames, code objects or every class of the process.
ESCAPE_ATTRS = frozenset({"__globals__", "__code__", "__subclasses__", "__builtins__",
                          "__getattribute__", "__mro__", "__bases__", "__base__", "__closure__",
                          "f_globals", "f_locals", "f_back", "f_builtins", "gi_frame", "gi_code",
                          "tb_frame", "co_code", "__loader__", "cr_frame", "ag_frame"})
_NAME_TAKERS = {"getattr": 1, "setattr": 1, "delattr": 1, "operator.attrgetter": 0,
                "operator.methodcaller": 0} | dict.fromkeys(IMPORTERS, 0)
# Builtins that turn a string into an attribute, a module or a namespace.
_REFLECTION = frozenset({"getattr", "setattr", "delattr", "globals", "locals", "vars",
                         "operator.attrgetter", "operator.methodcaller"})
_NAMESPACE_READS = frozenset({"get", "pop", "setdefault", "__getitem__"})
_NAMESPACE_WALKS = frozenset({"items", "values", "keys", "copy", "__iter__"})
_DUNDER = re.compile(r"__[A-Za-z][A-Za-z0-9_]*?__")


def _dynamic(node: ast.AST, what: str) -> Flag:
    return make_flag("dynamic-access", node, what)


def dynamic_flags(node: ast.AST, ctx: SourceContext) -> Iterator[Flag]:
    """Flags for one node that hides what it reaches."""
    if isinstance(node, ast.Attribute):
        yield from _attribute_flags(node, ctx)
    elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
        yield from _bare_name_flags(node, ctx)
    elif isinstance(node, ast.Call):
        yield from _call_flags(node, ctx)
    elif isinstance(node, ast.Subscript) and ctx.is_namespace(node.value) \
            and ctx.resolver.texts(node.slice) is None:
        yield _dynamic(node, f"looks up `{snippet(node)}` in a namespace with a key computed "
                       "at run time")
    elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)) \
            and ctx.is_namespace(node.iter):
        yield _dynamic(node.iter, f"walks over the namespace `{snippet(node.iter)}`")
    elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
            and _DUNDER.fullmatch(node.name) and node.name not in _PLAIN_METHODS:
        yield _dynamic(node, f"defines `{node.name}`, which Python calls implicitly (on "
                       "unpickling, garbage collection or attribute lookup)")


def _attribute_flags(node: ast.Attribute, ctx: SourceContext) -> Iterator[Flag]:
    if node.attr in ESCAPE_ATTRS:
        yield make_flag("eval-exec", node, f"reaches Python internals through `.{node.attr}`",
                        meaning=INTERNALS)
        return
    if not _DUNDER.fullmatch(node.attr) or node.attr in _PLAIN_DUNDERS:
        return
    parent = ctx.parents.get(node)
    if node.attr == "__class__" and isinstance(parent, ast.Attribute) \
            and parent.attr in ("__name__", "__qualname__"):
        return  # type(x).__name__ spelled the long way
    yield _dynamic(node, f"reaches the dunder attribute `{snippet(node)}`")


def _bare_name_flags(node: ast.Name, ctx: SourceContext) -> Iterator[Flag]:
    if _DUNDER.fullmatch(node.id) and node.id not in _PLAIN_NAMES | {"__builtins__", "__import__"}:
        yield _dynamic(node, f"uses the dunder name `{node.id}`")
    names = ctx.names(node) & _REFLECTION
    parent = ctx.parents.get(node)
    called = isinstance(parent, ast.Call) and parent.func is node
    if names and not called:
        shown = f"`{node.id}`" + ("" if node.id in names else f" (which is {min(names)})")
        yield _dynamic(node, f"passes {shown} around as a value, so the names it looks up "
                       "cannot be followed")


def _call_flags(call: ast.Call, ctx: SourceContext) -> Iterator[Flag]:
    names = ctx.names(call.func)
    for taker in sorted(names & set(_NAME_TAKERS)):
        yield from _name_argument_flags(call, taker, _NAME_TAKERS[taker], ctx)
    if "type" in names and len(call.args) == 3:
        yield _dynamic(call, f"creates a class at run time with `{snippet(call)}`")
    if "vars" in names and call.args and ctx.is_module(call.args[0]):
        yield _dynamic(call, f"reads the namespace of module {ctx.qual(call.args[0])}")
    func = call.func
    if isinstance(func, ast.Attribute) and ctx.is_namespace(func.value):
        computed = call.args and ctx.resolver.texts(call.args[0]) is None
        if func.attr in _NAMESPACE_WALKS or (func.attr in _NAMESPACE_READS and computed):
            yield _dynamic(call, f"calls `{snippet(call)}` on a namespace")


def _name_argument_flags(call: ast.Call, taker: str, position: int,
                         ctx: SourceContext) -> Iterator[Flag]:
    """``getattr(x, NAME)``, ``__import__(NAME)``: NAME must be spelled out."""
    if len(call.args) <= position or isinstance(call.args[position], ast.Starred):
        if call.keywords or any(isinstance(a, ast.Starred) for a in call.args):
            yield _dynamic(call, f"calls {taker} with arguments unpacked at run time")
        return
    argument = call.args[position]
    texts = ctx.resolver.texts(argument)
    if texts is None:
        yield _dynamic(call, f"calls `{snippet(call)}` with a name computed at run time")
    elif not ctx.resolver.spelled_out(argument):
        shown = ", ".join(repr(t) for t in sorted(texts))
        yield _dynamic(call, f"builds the name {shown} for {taker} at run time, hiding it from "
                       "a reader")


def dunder_text_flags(node: ast.AST, text: str) -> Iterator[Flag]:
    """A string spelling a dunder (``"__globals__"``, ``"{0.__class__}"``) reaches internals."""
    for found in sorted(set(_DUNDER.findall(text)) - _PLAIN_DUNDERS):
        yield _dynamic(node, f"names the dunder `{found}` in a string")


def submission_flags(tree: ast.Module, function: ast.FunctionDef | ast.AsyncFunctionDef | None
                     ) -> Iterator[Flag]:
    """What PySyft runs besides the reviewed function.

    PySyft executes *every* top-level statement of a submission (it wraps the
    whole module in the function it calls), so code beside the function runs
    too, and a second definition of the same name replaces the one reviewed.
    """
    body = tree.body
    for index, stmt in enumerate(body):
        docstring = index == 0 and isinstance(stmt, ast.Expr) and isinstance(
            stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
        if not docstring and not isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef,
                                                   ast.AsyncFunctionDef, ast.ClassDef)):
            yield make_flag("top-level-code", stmt, f"runs `{snippet(stmt)}` beside the function")
    if function is None:
        return
    bindings = [stmt for stmt in ast.walk(tree) if _binds(stmt, function.name)]
    if len(bindings) > 1:
        yield _dynamic(bindings[1], f"binds `{function.name}` {len(bindings)} times: PySyft "
                       "runs the last binding, which may not be the definition reviewed")
    params = [a.arg for a in [*function.args.posonlyargs, *function.args.args,
                              *function.args.kwonlyargs]]
    if "datasite" in params:
        yield make_flag("internals", function, f"`{function.name}` takes a `datasite` argument, "
                        "so PySyft hands it the datasite's API and it can launch other approved "
                        "code as jobs")


def _binds(node: ast.AST, name: str) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name == name
    if isinstance(node, ast.Name):
        return node.id == name and isinstance(node.ctx, (ast.Store, ast.Del))
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return any((a.asname or a.name.split(".")[0]) == name for a in node.names)
    return False
