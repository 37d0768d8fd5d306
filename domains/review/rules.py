"""Capability rules of the code review: what submitted code could *do* besides compute.

A function submitted to a datasite should read its inputs and return a result.
These rules look for anything else it could do on the hospital's server: reach
the network, start programs or threads, read or write files, read the
environment, unpickle data, reach the datasite's own code, run code assembled
at run time, load code and native libraries, or hide what it reaches behind
computed names and dunders. Each finding is a :class:`Flag`.

Names are resolved through the code's own imports and assignments (``np.save``
is ``numpy.save``; after ``o = os``, ``o.system`` is ``os.system``);
:mod:`domains.review.names` says how. Every reference counts, called or not:
``f = np.load`` is flagged where it names ``numpy.load``. Code handed to
``exec``/``eval``/``compile`` as a string the review can evaluate (also through
``base64`` and friends) is reviewed too, and its flags are reported at the
call. File checks are in :mod:`domains.review.files`, hidden access in
:mod:`domains.review.dynamic`, the rule catalogue in
:mod:`domains.review.catalog`.

The rules read the code, they do not run it; see :mod:`domains.review.code_review` for what
that means for the data owner.

>>> [f.rule for f in capability_flags(ast.parse("import os\\no = os\\no.system('ls')"))]
['subprocess']
"""

from __future__ import annotations

import ast
import contextlib
import pickletools
import re
from collections.abc import Iterator

from domains.review.catalog import (
    RULES,
    SEVERITIES,
    Flag,
    make_flag,
    meaning_for,
    rule_for,
    rules_under,
)
from domains.review.dynamic import dunder_text_flags, dynamic_flags
from domains.review.files import io_call_flags, sensitive_text_flags
from domains.review.names import SourceContext, snippet

__all__ = ["RULES", "SEVERITIES", "Flag", "capability_flags"]

_PATCHING = "changes how library code behaves for the rest of the run"
_REWRITES = "rewrites the program's own variables"
_DICT_MUTATORS = frozenset({"update", "setdefault", "pop", "popitem", "clear", "__setitem__",
                            "__delitem__"})
_CODE_RUNNERS = frozenset({"exec", "eval", "compile", "timeit.timeit", "timeit.repeat"})
_UNPICKLERS = frozenset({"pickle.loads", "dill.loads", "cloudpickle.loads", "_pickle.loads"})
_MAX_DEPTH = 3  # code in a string in a string in a string, and no deeper
# What a decorator of a submitted function may name from syft: PySyft strips that
# decorator before running the code, and the policy it shows is the request's own.
_SYFT_DECORATOR_NAMES = frozenset({
    "syft.syft_function", "syft.syft_function_single_use", "syft.Constant",
    "syft.MixedInputPolicy", "syft.ExactMatch", "syft.SingleExecutionExactOutput",
    "syft.service.policy.policy.OutputPolicyExecuteCount",
})
# Method names distinctive enough to flag on objects the review cannot name.
_SUSPICIOUS_METHODS = {
    **dict.fromkeys(("system", "popen", "Popen", "check_output", "check_call", "getoutput",
                     "getstatusoutput", "posix_spawn", "posix_spawnp", "forkpty", "execv",
                     "execve", "execvp", "execl", "execlp", "spawnv", "spawnl"), "subprocess"),
    **dict.fromkeys(("environ", "environb", "getenv", "putenv"), "environment"),
    **dict.fromkeys(("import_module", "dlopen", "LoadLibrary", "CDLL", "load_library"),
                    "dynamic-import"),
}


def capability_flags(tree: ast.AST, *, depth: int = 0, context: SourceContext | None = None
                     ) -> list[Flag]:
    """All capability findings in ``tree``, in walk order (the caller sorts them)."""
    ctx = context or SourceContext(tree)
    decorated = _decorator_nodes(tree)
    flags: list[Flag] = []
    for node in ast.walk(tree):
        flags.extend(_check_node(node, ctx, decorated, depth))
    return flags


def _decorator_nodes(tree: ast.AST) -> set[ast.AST]:
    """Nodes inside the decorators of top-level functions."""
    body = tree.body if isinstance(tree, ast.Module) else []
    return {node for stmt in body if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef))
            for decorator in stmt.decorator_list for node in ast.walk(decorator)}


def _check_node(node: ast.AST, ctx: SourceContext, decorated: set[ast.AST],
                depth: int) -> Iterator[Flag]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield from _import_flags(node, ctx)
    if isinstance(node, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)) \
            and _is_maximal_reference(node, ctx):
        yield from _reference_flags(node, ctx, decorated)
    if isinstance(node, ast.Attribute):
        yield from _method_name_flags(node, ctx)
    if isinstance(node, ast.Call):
        yield from _call_flags(node, ctx)
        yield from io_call_flags(node, ctx)
        yield from _code_string_flags(node, ctx, depth)
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
        yield from _store_flags(node, ctx)
    yield from _text_flags(node, ctx)
    yield from dynamic_flags(node, ctx)


def _import_flags(node: ast.Import | ast.ImportFrom, ctx: SourceContext) -> Iterator[Flag]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        names = [f"{base}.{a.name}" if a.name != "*" else base for a in node.names]
    top_level = isinstance(ctx.tree, ast.Module) and node in ctx.tree.body
    for name in names:
        rule = rule_for(name)
        if rule is None and isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            rule = rules_under(name)  # `from os import *` hides `system` behind a bare name
        if rule == "internals" and top_level and (name == "syft" or name.startswith(
                "syft.service.policy")):
            continue  # the template's own preamble: the names its decorator uses
        if rule:
            yield make_flag(rule, node, f"imports {name}")


def _extends(parent: ast.AST | None, node: ast.AST, ctx: SourceContext) -> bool:
    """Whether ``parent`` is a longer reference built on ``node`` (``os`` in ``os.system``)."""
    if isinstance(parent, (ast.Attribute, ast.Subscript)) and parent.value is node:
        return True
    if isinstance(parent, (ast.Call, ast.IfExp, ast.BoolOp, ast.NamedExpr)) \
            and getattr(parent, "func", None) is not node:
        return bool(ctx.names(parent))
    return False


def _is_maximal_reference(node: ast.AST, ctx: SourceContext) -> bool:
    if isinstance(getattr(node, "ctx", None), (ast.Store, ast.Del)):
        return False  # `x = os.system` is flagged where it names os.system
    return bool(ctx.names(node)) and not _extends(ctx.parents.get(node), node, ctx)


def _reference_flags(node: ast.AST, ctx: SourceContext, decorated: set[ast.AST]) -> Iterator[Flag]:
    seen: set[str] = set()
    for name in sorted(ctx.names(node)):
        rule = rule_for(name)
        if rule is None or rule in seen:
            continue
        if node in decorated and name in _SYFT_DECORATOR_NAMES:
            continue
        seen.add(rule)
        parent = ctx.parents.get(node)
        verb = "calls" if isinstance(parent, ast.Call) and parent.func is node else "uses"
        written = snippet(node)
        shown = name if written == name else f"`{written}`, which is {name}"
        yield make_flag(rule, node, f"{verb} {shown}", meaning=meaning_for(rule, name))


def _method_name_flags(node: ast.Attribute, ctx: SourceContext) -> Iterator[Flag]:
    """``d["o"].system("ls")``: the review cannot name the object, the method says enough."""
    rule = _SUSPICIOUS_METHODS.get(node.attr)
    if rule is not None and not ctx.names(node):
        yield make_flag(rule, node, f"uses `.{node.attr}` on `{snippet(node.value)}`, an object "
                        "the review cannot identify", "medium")


def _call_flags(call: ast.Call, ctx: SourceContext) -> Iterator[Flag]:
    names = ctx.names(call.func)
    if names & {"setattr", "delattr"} and call.args and ctx.is_module(call.args[0]):
        yield make_flag("eval-exec", call, f"calls {min(names & {'setattr', 'delattr'})} on "
                        f"module {ctx.qual(call.args[0])}", meaning=_PATCHING)
    if isinstance(call.func, ast.Attribute) and call.func.attr in _DICT_MUTATORS \
            and ctx.is_namespace(call.func.value):
        yield make_flag("eval-exec", call, f"calls `{snippet(call)}`", meaning=_REWRITES)
    if names & _UNPICKLERS and call.args:
        yield from _pickle_content_flags(call, ctx)


def _code_string_flags(call: ast.Call, ctx: SourceContext, depth: int) -> Iterator[Flag]:
    """Review the code ``exec``/``eval``/``compile`` get, when the review can spell it out."""
    runner = ctx.names(call.func) & _CODE_RUNNERS
    if not runner or not call.args:
        return
    source = call.args[0]
    texts = ctx.resolver.texts(source)
    if texts is None:
        return
    qual = min(runner)
    if not ctx.resolver.spelled_out(source):
        yield make_flag("dynamic-access", call, f"builds the code it passes to {qual} at run "
                        "time, hiding it from a reader")
    if depth >= _MAX_DEPTH:
        return
    for text in sorted(texts):
        try:
            inner = ast.parse(text)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        for flag in capability_flags(inner, depth=depth + 1):
            message = re.sub(r" at line \d+$", "", flag.message)
            yield Flag(flag.rule, flag.severity, call.lineno,
                       f"in the code {qual} runs at line {call.lineno} (its line {flag.line}): "
                       f"{message}")


def _pickle_content_flags(call: ast.Call, ctx: SourceContext) -> Iterator[Flag]:
    """``pickle.loads(b"...")``: name the functions the pickle would call."""
    for data in ctx.resolver.values(call.args[0]) or ():
        if isinstance(data, bytes):
            for name in _pickled_globals(data):
                rule = rule_for(name)
                if rule:
                    yield make_flag(rule, call, f"unpickles data that calls {name}")


def _pickled_globals(data: bytes) -> list[str]:
    """Dotted names a pickle imports (``GLOBAL``/``STACK_GLOBAL``), read without loading it."""
    found, strings = [], []
    with contextlib.suppress(Exception):  # a damaged pickle: what was read so far counts
        for opcode, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                strings.append(arg)
            if opcode.name == "GLOBAL" and isinstance(arg, str):
                found.append(arg.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    return found  # posix.system and builtins.eval: rule_for knows what they are


def _text_flags(node: ast.AST, ctx: SourceContext) -> Iterator[Flag]:
    """Strings naming secrets or dunders, also when built (``"/proc/self/" + "environ"``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes):
        if _is_docstring(node, ctx):
            return
        texts: frozenset[str] | None = ctx.resolver.texts(node)
    elif isinstance(node, (ast.BinOp, ast.JoinedStr, ast.Call)) and not isinstance(
            ctx.parents.get(node), (ast.BinOp, ast.JoinedStr)):
        texts = ctx.resolver.texts(node)
    else:
        return
    for text in sorted(texts or ()):
        yield from sensitive_text_flags(node, text)
        if isinstance(node, ast.Constant) or "__" in text:
            yield from dunder_text_flags(node, text)


def _is_docstring(node: ast.Constant, ctx: SourceContext) -> bool:
    parent = ctx.parents.get(node)
    owner = ctx.parents.get(parent) if parent is not None else None
    return isinstance(parent, ast.Expr) and isinstance(
        owner, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and bool(
        owner.body) and owner.body[0] is parent


def _store_flags(node: ast.stmt, ctx: SourceContext) -> Iterator[Flag]:
    if isinstance(node, (ast.Assign, ast.Delete)):
        targets = node.targets
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    else:
        return
    for target in targets:
        for sub in ast.walk(target):
            if isinstance(sub, ast.Subscript) and ctx.is_namespace(sub.value):
                yield make_flag("eval-exec", sub, f"assigns to `{snippet(sub)}`", meaning=_REWRITES)
            elif isinstance(sub, ast.Attribute) and ctx.is_module(sub.value):
                yield make_flag("eval-exec", sub, f"assigns to {ctx.qual(sub)}", meaning=_PATCHING)
