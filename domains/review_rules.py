"""Capability rules of the code review: what submitted code could *do* besides compute.

A function submitted to a datasite should read its inputs and return a result.
These rules look for anything else it could do on the hospital's server: reach
the network, start programs, write or delete files, run code assembled at run
time, or load code and native libraries. Each finding is a :class:`Flag`.

Names are resolved through the code's own imports (``np.save`` is
``numpy.save``); :mod:`domains.review_names` says how.

The rules read the code, they do not run it; see :mod:`domains.review` for what
that means for the data owner.
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterator
from dataclasses import dataclass

from domains.review_calls import TRUSTED_RUNTIMES
from domains.review_names import SourceContext, literal_str, snippet

SEVERITIES = ("high", "medium", "info")


@dataclass(frozen=True)
class Flag:
    """One finding of the review, for a data owner to weigh before approving.

    Attributes:
        rule: Short id of the rule, e.g. ``"network"`` or ``"per-image-return"``.
        severity: ``"high"``, ``"medium"`` or ``"info"``.
        line: 1-based line in the submitted source (decorator lines included).
        message: One sentence naming the call or name and why it matters.
    """

    rule: str
    severity: str
    line: int
    message: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(
                f"Flag severity must be one of {', '.join(SEVERITIES)} (got {self.severity!r})"
            )


# rule -> (severity, what it means to a data owner, qualified-name patterns).
# A pattern matches the name itself and anything under it ("http" matches
# "http.client.HTTPConnection"); a trailing "*" matches any continuation.
_NAME_RULES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "network": ("high", "network access", (
        "socket", "ssl", "urllib", "urllib3", "http", "httpx", "requests", "aiohttp",
        "ftplib", "smtplib", "telnetlib", "paramiko", "websocket", "websockets", "grpc",
        "asyncio.open_connection", "asyncio.open_unix_connection", "asyncio.start_server",
        "xmlrpc", "socketserver", "poplib", "imaplib", "nntplib", "webbrowser", "pycurl",
        "zmq", "boto3", "botocore", "torch.hub", "torch.distributed",
    )),
    "subprocess": ("high", "runs another program or process", (
        "subprocess", "os.system", "os.popen", "os.exec*", "os.spawn*", "os.fork*",
        "os.posix_spawn*", "os.startfile", "pty", "multiprocessing", "commands",
        "asyncio.create_subprocess_*", "concurrent.futures.ProcessPoolExecutor",
        "platform.popen", "torch.multiprocessing",
    )),
    "file-write": ("medium", "writes or deletes files on the datasite", (
        "os.remove", "os.unlink", "os.rename", "os.renames", "os.replace", "os.makedirs",
        "os.mkdir", "os.rmdir", "os.removedirs", "os.chmod", "os.chown", "os.link",
        "os.symlink", "os.truncate", "os.mkfifo", "os.mknod", "shutil.copy*", "shutil.move",
        "shutil.rmtree", "shutil.make_archive", "shutil.unpack_archive", "shutil.chown",
        "numpy.save*", "torch.save", "torch.jit.save", "pickle.dump", "dill.dump",
        "cloudpickle.dump", "joblib.dump", "json.dump", "marshal.dump",
        "tempfile.NamedTemporaryFile", "tempfile.TemporaryFile", "tempfile.mkstemp",
        "tempfile.mkdtemp", "tempfile.TemporaryDirectory", "tempfile.SpooledTemporaryFile",
    )),
    "eval-exec": ("high", "runs code assembled at run time", (
        "eval", "exec", "compile", "__builtins__", "builtins", "marshal.loads",
        "types.CodeType", "types.FunctionType", "codeop", "sys._getframe",
        "inspect.currentframe",
    )),
    "dynamic-import": ("high", "loads code or native libraries at run time", (
        "__import__", "importlib", "imp", "ctypes", "cffi", "runpy", "zipimport",
        "sys.modules", "torch.utils.cpp_extension", "torch.ops.load_library",
    )),
}

# Method names that are risky whatever object they are called on.
_NETWORK_METHODS = frozenset({"urlopen", "urlretrieve", "open_connection", "create_connection",
                              "sock_connect"})
_WRITE_METHODS = frozenset({"write_text", "write_bytes", "touch", "mkdir", "makedirs", "unlink",
                            "rmdir", "symlink_to", "hardlink_to", "tofile", "savefig", "chmod"})
# Risky only with a destination argument: ``df.to_csv()`` just returns a string.
_WRITE_METHODS_WITH_ARGS = frozenset({"to_csv", "to_parquet", "to_pickle", "to_excel", "to_hdf",
                                      "to_feather", "to_json", "to_sql", "to_stata", "to_html",
                                      "to_latex", "to_markdown", "to_xml", "save",
                                      "save_pretrained"})
# ``str.replace`` and ``DataFrame.rename`` are everywhere, so only on paths.
_PATH_METHODS = frozenset({"rename", "replace"})
# file openers -> (position of the mode argument, its keyword).
_OPENERS = {"open": (1, "mode"), "io.open": (1, "mode"), "codecs.open": (1, "mode"),
            "gzip.open": (1, "mode"), "bz2.open": (1, "mode"), "lzma.open": (1, "mode"),
            "tarfile.open": (1, "mode"), "zipfile.ZipFile": (1, "mode"),
            "h5py.File": (1, "mode"), "os.fdopen": (1, "mode"), "io.FileIO": (1, "mode")}
_MODE_CHARS = frozenset("rwxabtU+")
_ESCAPE_ATTRS = frozenset({"__globals__", "__code__", "__subclasses__", "__builtins__",
                           "__getattribute__", "__mro__", "__bases__", "__base__", "__closure__",
                           "f_globals", "f_locals", "f_back", "f_builtins", "gi_frame", "gi_code",
                           "tb_frame", "co_code", "__loader__"})
_INTERNALS = "can reach any function or variable of the datasite process"
_PATCHING = "changes how library code behaves for the rest of the run"
_REWRITES = "rewrites the program's own variables"
_DICT_MUTATORS = frozenset({"update", "setdefault", "pop", "popitem", "clear", "__setitem__",
                            "__delitem__"})
_URL_PREFIXES = ("http://", "https://", "ftp://", "sftp://", "ws://", "wss://", "s3://", "gs://")
_BUILTIN_NAMES = frozenset(dir(builtins)) | {"__builtins__"}


def _matches(name: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern or name.startswith(pattern + ".")


def _rule_for(name: str) -> str | None:
    for rule, (_, _, patterns) in _NAME_RULES.items():
        if any(_matches(name, p) for p in patterns):
            return rule
    return None


def _flag(
    rule: str, node: ast.AST, what: str, severity: str | None = None, meaning: str | None = None
) -> Flag:
    """``what`` names the call; ``meaning`` says why an owner should care (the rule's default)."""
    default, rule_meaning, _ = _NAME_RULES[rule]
    line = getattr(node, "lineno", 1)
    return Flag(rule, severity or default, line, f"{what} ({meaning or rule_meaning}) at line {line}")


def capability_flags(tree: ast.AST) -> list[Flag]:
    """All capability findings in ``tree``, in walk order (the caller sorts them)."""
    ctx = SourceContext(tree)
    flags: list[Flag] = []
    for node in ast.walk(tree):
        flags.extend(_check_node(node, ctx))
    return flags


def _check_node(node: ast.AST, ctx: SourceContext) -> Iterator[Flag]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield from _import_flags(node)
    if isinstance(node, (ast.Name, ast.Attribute, ast.Call)) and _is_maximal_chain(node, ctx):
        yield from _reference_flags(node, ctx)
    if isinstance(node, ast.Attribute) and node.attr in _ESCAPE_ATTRS:
        yield _flag("eval-exec", node, f"reaches Python internals through `.{node.attr}`",
                    meaning=_INTERNALS)
    if isinstance(node, ast.Call):
        yield from _call_flags(node, ctx)
    if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
        yield from _store_flags(node, ctx)


def _import_flags(node: ast.Import | ast.ImportFrom) -> Iterator[Flag]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        names = [f"{base}.{a.name}" if a.name != "*" else base for a in node.names]
    for name in names:
        rule = _rule_for(name) or _star_rule(node, name)
        if rule:
            yield _flag(rule, node, f"imports {name}")


def _star_rule(node: ast.AST, module: str) -> str | None:
    """``from os import *`` hides ``system`` behind a bare name, so flag the import itself."""
    if not (isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names)):
        return None
    for rule, (_, _, patterns) in _NAME_RULES.items():
        if any(p.startswith(module + ".") for p in patterns):
            return rule
    return None


def _is_chain(node: ast.AST, ctx: SourceContext) -> bool:
    if isinstance(node, (ast.Name, ast.Attribute)):
        return True
    return isinstance(node, ast.Call) and node.args != [] and ctx.qual(node) is not None


def _is_maximal_chain(node: ast.AST, ctx: SourceContext) -> bool:
    if not _is_chain(node, ctx):
        return False
    parent = ctx.parents.get(node)
    if isinstance(parent, ast.Attribute) and parent.value is node:
        return False
    return not (
        isinstance(parent, ast.Call) and parent.args and parent.args[0] is node
        and _is_chain(parent, ctx)
    )


def _reference_flags(node: ast.AST, ctx: SourceContext) -> Iterator[Flag]:
    root = node
    while isinstance(root, ast.Attribute) or (isinstance(root, ast.Call) and _is_chain(root, ctx)):
        root = root.value if isinstance(root, ast.Attribute) else root.args[0]
    if isinstance(root, ast.Name) and root.id in ctx.locals:
        return  # a variable of the code's own, e.g. a list called `requests`
    if node is root and isinstance(root, ast.Name) and root.id not in ctx.aliases \
            and root.id not in _BUILTIN_NAMES:
        return  # an undefined bare name is not a module
    name = ctx.qual(node)
    rule = _rule_for(name) if name else None
    if name and rule:
        parent = ctx.parents.get(node)
        verb = "calls" if isinstance(parent, ast.Call) and parent.func is node else "uses"
        written = snippet(node)
        shown = name if written == name else f"`{written}`, which is {name}"
        yield _flag(rule, node, f"{verb} {shown}")


def _call_flags(call: ast.Call, ctx: SourceContext) -> Iterator[Flag]:
    qual = ctx.qual(call.func)
    method = call.func.attr if isinstance(call.func, ast.Attribute) else None
    if qual in TRUSTED_RUNTIMES:
        yield Flag("medsyft-runtime", "info", call.lineno,
                   f"calls {qual}: {TRUSTED_RUNTIMES[qual]} (line {call.lineno})")
    if qual in _OPENERS:
        yield from _open_mode_flags(call, qual, *_OPENERS[qual])
    elif qual == "os.open":
        yield from _os_open_flags(call)
    elif method == "open":
        yield from _method_open_flags(call)
    if isinstance(call.func, ast.Attribute) and not (qual and _rule_for(qual)):
        yield from _method_flags(call, call.func, ctx)
    elif isinstance(call.func, ast.Name) and call.func.id in _NETWORK_METHODS \
            and not (qual and _rule_for(qual)):
        yield _flag("network", call, f"calls `{snippet(call)}`")  # urlopen from a star import
    if qual == "getattr" and (len(call.args) < 2 or literal_str(call.args[1]) is None):
        yield _flag("eval-exec", call, f"calls `{snippet(call)}` with an attribute name "
                    "computed at run time", "medium", meaning=_INTERNALS)
    if qual in ("setattr", "delattr") and call.args and ctx.is_module(call.args[0]):
        yield _flag("eval-exec", call, f"calls {qual} on module {ctx.qual(call.args[0])}",
                    meaning=_PATCHING)
    if isinstance(call.func, ast.Attribute) and method in _DICT_MUTATORS \
            and ctx.is_namespace(call.func.value):
        yield _flag("eval-exec", call, f"calls `{snippet(call)}`", meaning=_REWRITES)
    for url in _url_arguments(call):
        yield _flag("network", call, f"passes the address {url!r} to {qual or 'a call'}",
                    "medium")


def _method_flags(call: ast.Call, func: ast.Attribute, ctx: SourceContext) -> Iterator[Flag]:
    method = func.attr
    writes = (
        method in _WRITE_METHODS
        or (method in _PATH_METHODS and ctx.is_path(func.value))
        or (method in _WRITE_METHODS_WITH_ARGS and bool(call.args or call.keywords))
    )
    if method in _NETWORK_METHODS:
        yield _flag("network", call, f"calls `{snippet(call)}`")
    elif writes:
        yield _flag("file-write", call, f"calls `{snippet(call)}`")


def _is_write_mode(mode: str) -> bool:
    return bool(set(mode) & set("wax+"))


def _open_mode_flags(call: ast.Call, qual: str, position: int, keyword: str) -> Iterator[Flag]:
    mode: ast.expr | None = None
    if len(call.args) > position and not any(isinstance(a, ast.Starred) for a in call.args):
        mode = call.args[position]
    for kw in call.keywords:
        if kw.arg == keyword:
            mode = kw.value
    hidden = any(isinstance(a, ast.Starred) for a in call.args) or any(
        kw.arg is None for kw in call.keywords)
    text = literal_str(mode)
    if text is not None and _is_write_mode(text):
        yield _flag("file-write", call, f"calls {qual} with mode {text!r}")
    elif (mode is not None and not isinstance(mode, ast.Constant)) or (mode is None and hidden):
        yield _flag("file-write", call, f"calls `{snippet(call)}` with a mode decided at run "
                    "time")


def _method_open_flags(call: ast.Call) -> Iterator[Flag]:
    """``Path.open("w")`` or ``zipfile.open(name, "w")``: any mode-like literal counts."""
    for kw in call.keywords:
        if kw.arg == "mode" and literal_str(kw.value) is None:
            yield _flag("file-write", call, f"calls `{snippet(call)}` with a mode decided at "
                        "run time")
            return
    texts = [literal_str(a) for a in call.args] + [
        literal_str(kw.value) for kw in call.keywords if kw.arg == "mode"]
    for text in texts:
        if text and set(text) <= _MODE_CHARS and _is_write_mode(text):
            yield _flag("file-write", call, f"calls `{snippet(call)}` with mode {text!r}")
            return


def _os_open_flags(call: ast.Call) -> Iterator[Flag]:
    flags = call.args[1] if len(call.args) > 1 else next(
        (kw.value for kw in call.keywords if kw.arg == "flags"), None)
    read_only = (isinstance(flags, ast.Attribute) and flags.attr == "O_RDONLY") or (
        isinstance(flags, ast.Constant) and flags.value == 0)
    if not read_only:
        yield _flag("file-write", call, f"calls `{snippet(call)}` with flags that may write")


def _url_arguments(call: ast.Call) -> Iterator[str]:
    for arg in [*call.args, *(kw.value for kw in call.keywords)]:
        text = literal_str(arg)
        if text is None and isinstance(arg, ast.JoinedStr) and arg.values:
            text = literal_str(arg.values[0])
        if text and text.strip().lower().startswith(_URL_PREFIXES):
            yield text if len(text) <= 60 else text[:57] + "..."


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
                yield _flag("eval-exec", sub, f"assigns to `{snippet(sub)}`", meaning=_REWRITES)
            elif isinstance(sub, ast.Attribute) and ctx.is_module(sub.value):
                yield _flag("eval-exec", sub, f"assigns to {ctx.qual(sub)}", meaning=_PATCHING)
