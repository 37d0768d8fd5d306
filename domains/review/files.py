"""Review rules for files: what submitted code reads, writes or unpickles on the datasite.

Approved code is meant to see only the assets bound at approval. Anything it
reads from disk bypasses that: medsyft's own training store holds every
published image (``DIR/datasets/NAME.npz``), the data directory holds the admin
password, the signing key and PySyft's database, and ``/proc/self/environ``
holds the process environment. Writing can tamper with the ε ledger or the
audit log, and unpickling runs code. Which call does what often depends on an
argument (``open``'s mode, ``np.load``'s ``allow_pickle``, ``np.memmap``'s
mode), so these checks read the arguments; names alone are in
:data:`domains.review.catalog.RULES`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from domains.review.catalog import Flag, make_flag, rule_for
from domains.review.names import SourceContext, literal_str, snippet

# Method names that are risky whatever object they are called on.
NETWORK_METHODS = frozenset({"urlopen", "urlretrieve", "open_connection", "create_connection",
                             "sock_connect"})
_WRITE_METHODS = frozenset({"write_text", "write_bytes", "touch", "mkdir", "makedirs", "unlink",
                            "rmdir", "symlink_to", "hardlink_to", "tofile", "savefig", "chmod"})
_READ_METHODS = frozenset({"read_text", "read_bytes", "iterdir", "rglob", "readlink"})
_PATH_READ_METHODS = frozenset({"open", "glob", "read_text", "read_bytes", "iterdir", "rglob"})
# Risky only with a destination argument: ``df.to_csv()`` just returns a string.
_WRITE_METHODS_WITH_ARGS = frozenset({"to_csv", "to_parquet", "to_pickle", "to_excel", "to_hdf",
                                      "to_feather", "to_json", "to_sql", "to_stata", "to_html",
                                      "to_latex", "to_markdown", "to_xml", "save",
                                      "save_pretrained", "dump"})
# ``str.replace`` and ``DataFrame.rename`` are everywhere, so only on paths.
_PATH_METHODS = frozenset({"rename", "replace"})
# file openers -> (position of the mode argument, its keyword, the default mode).
_OPENERS = {"open": (1, "mode"), "io.open": (1, "mode"), "codecs.open": (1, "mode"),
            "gzip.open": (1, "mode"), "bz2.open": (1, "mode"), "lzma.open": (1, "mode"),
            "tarfile.open": (1, "mode"), "zipfile.ZipFile": (1, "mode"),
            "h5py.File": (1, "mode"), "os.fdopen": (1, "mode"), "io.FileIO": (1, "mode"),
            "numpy.memmap": (2, "mode")}
_DEFAULT_MODES = {"numpy.memmap": "r+"}  # np.memmap writes through unless told otherwise
_READ_ONLY_MEMMAP = frozenset({"r", "c", "readonly", "copyonwrite"})
_MODE_CHARS = frozenset("rwxabtU+")
_SAFE_YAML_LOADERS = frozenset({"yaml.SafeLoader", "yaml.CSafeLoader", "yaml.BaseLoader",
                                "yaml.CBaseLoader"})
_URL_PREFIXES = ("http://", "https://", "ftp://", "sftp://", "ws://", "wss://", "s3://", "gs://")

# Strings naming what a datasite keeps secret -> (rule, severity, what it is).
_SENSITIVE = (
    (re.compile(r"/proc/[^/]+/environ|MEDSYFT_DATA_DIR|SERVER_PRIVATE_KEY|DEFAULT_ROOT_PASSWORD"),
     "environment", "the datasite's environment (signing key, admin password, data directory)"),
    (re.compile(r"credentials\.json"), "file-read", "DIR/credentials.json, the admin password"),
    (re.compile(r"server\.key|\.medsyftkey|secret\.key"), "file-read",
     "a key file (the datasite's signing key or the HE secret key)"),
    (re.compile(r"db\.sqlite|(^|/)syft(/|$)"), "file-read",
     "PySyft's store: every asset, user and request of the datasite"),
    (re.compile(r"(^|/)datasets(/|$)"), "file-read",
     "the datasite's training store of private images (DIR/datasets/)"),
    (re.compile(r"audit\.jsonl|(^|/)jobs(/|$)|ledger"), "file-write",
     "the audit log or the ε ledgers of approved jobs"),
    (re.compile(r"/proc/[^/]+/(mem|maps|fd|cwd|root)|/etc/shadow|/etc/passwd|\.ssh/|id_rsa"),
     "file-read", "the memory, files or accounts of the datasite's machine"),
)


def io_call_flags(call: ast.Call, ctx: SourceContext) -> Iterator[Flag]:
    """Flags a call earns by what its arguments make it read, write or unpickle."""
    names = ctx.names(call.func)
    for qual in sorted(names & set(_OPENERS)):
        yield from _open_mode_flags(call, qual, *_OPENERS[qual])
    if "os.open" in names:
        yield from _os_open_flags(call)
    if "numpy.load" in names:
        yield from _pickle_flag(call, "allow_pickle", 2, "numpy.load", unsafe_when_absent=False)
    if "torch.load" in names:
        yield from _pickle_flag(call, "weights_only", None, "torch.load", unsafe_when_absent=True)
    if names & {"yaml.load", "yaml.load_all"}:
        yield from _yaml_flags(call, ctx)
    if "logging.basicConfig" in names and any(kw.arg in ("filename", None) for kw in call.keywords):
        yield make_flag("file-write", call, f"calls `{snippet(call)}`, which logs to a file")
    if isinstance(call.func, ast.Attribute) and not names & set(_OPENERS) \
            and not any(rule_for(n) for n in names):
        yield from _method_flags(call, call.func, ctx)
    elif isinstance(call.func, ast.Name) and call.func.id in NETWORK_METHODS and not names - {
            call.func.id}:
        yield make_flag("network", call, f"calls `{snippet(call)}`")  # urlopen from a star import
    for url in _url_arguments(call):
        yield make_flag("network", call, f"passes the address {url!r} to "
                        f"{ctx.qual(call.func) or 'a call'}", "medium")


def _argument(call: ast.Call, position: int | None, keyword: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    if position is not None and len(call.args) > position \
            and not any(isinstance(a, ast.Starred) for a in call.args[: position + 1]):
        return call.args[position]
    return None


def _hidden(call: ast.Call) -> bool:
    """``f(*args)`` or ``f(**kwargs)``: any argument may be in there."""
    return any(isinstance(a, ast.Starred) for a in call.args) or any(
        kw.arg is None for kw in call.keywords)


def _pickle_flag(call: ast.Call, keyword: str, position: int | None, qual: str, *,
                 unsafe_when_absent: bool) -> Iterator[Flag]:
    """``np.load(allow_pickle=True)``, ``torch.load`` without ``weights_only=True``."""
    value = _argument(call, position, keyword)
    if value is None:
        unsafe = unsafe_when_absent or _hidden(call)
    elif isinstance(value, ast.Constant):
        unsafe = value.value is not (keyword == "weights_only")  # the one safe literal
    else:
        unsafe = True  # decided at run time
    if unsafe:
        shown = f"{keyword}=True" if keyword == "weights_only" else f"{keyword}=False"
        yield make_flag("deserialization", call, f"calls `{snippet(call)}` without {shown}")


def _yaml_flags(call: ast.Call, ctx: SourceContext) -> Iterator[Flag]:
    loader = _argument(call, 1, "Loader")
    if loader is None or not ctx.names(loader) & _SAFE_YAML_LOADERS:
        yield make_flag("deserialization", call, f"calls `{snippet(call)}` without a safe Loader")


def _is_write_mode(mode: str) -> bool:
    return bool(set(mode) & set("wax+"))


def _open_mode_flags(call: ast.Call, qual: str, position: int, keyword: str) -> Iterator[Flag]:
    mode = _argument(call, position, keyword)
    text = literal_str(mode) if mode is not None else _DEFAULT_MODES.get(qual, "r")
    if mode is None and _hidden(call):
        text = None
    if text is None:
        yield make_flag("file-write", call, f"calls `{snippet(call)}` with a mode decided at "
                        "run time")
    elif (qual == "numpy.memmap" and text not in _READ_ONLY_MEMMAP) or (
            qual != "numpy.memmap" and _is_write_mode(text)):
        yield make_flag("file-write", call, f"calls {qual} with mode {text!r}")
    elif qual != "numpy.memmap":  # np.memmap is a file read by name already
        yield make_flag("file-read", call, f"opens a file for reading with {qual}: "
                        f"`{snippet(call)}`")


def _method_open_flags(call: ast.Call) -> Iterator[Flag]:
    """``Path.open("w")`` or ``zipfile.open(name, "w")``: any mode-like literal counts."""
    for kw in call.keywords:
        if kw.arg == "mode" and literal_str(kw.value) is None:
            yield make_flag("file-write", call, f"calls `{snippet(call)}` with a mode decided "
                            "at run time")
            return
    texts = [literal_str(a) for a in call.args] + [
        literal_str(kw.value) for kw in call.keywords if kw.arg == "mode"]
    for text in texts:
        if text and set(text) <= _MODE_CHARS and _is_write_mode(text):
            yield make_flag("file-write", call, f"calls `{snippet(call)}` with mode {text!r}")
            return


def _os_open_flags(call: ast.Call) -> Iterator[Flag]:
    flags = _argument(call, 1, "flags")
    read_only = (isinstance(flags, ast.Attribute) and flags.attr == "O_RDONLY") or (
        isinstance(flags, ast.Constant) and flags.value == 0)
    if read_only:
        yield make_flag("file-read", call, f"opens a file for reading: `{snippet(call)}`")
    else:
        yield make_flag("file-write", call, f"calls `{snippet(call)}` with flags that may write")


def _method_flags(call: ast.Call, func: ast.Attribute, ctx: SourceContext) -> Iterator[Flag]:
    """Methods on values the review cannot name: only distinctive method names count."""
    method = func.attr
    on_path = ctx.is_path(func.value)
    if method == "open":
        opened = list(_method_open_flags(call))
        yield from opened
        if opened or not on_path:
            return
    writes = (
        method in _WRITE_METHODS
        or (method in _PATH_METHODS and on_path)
        or (method in _WRITE_METHODS_WITH_ARGS and bool(call.args or call.keywords))
    )
    if method in NETWORK_METHODS:
        yield make_flag("network", call, f"calls `{snippet(call)}`")
    elif writes:
        yield make_flag("file-write", call, f"calls `{snippet(call)}`")
    elif method in _READ_METHODS or (on_path and method in _PATH_READ_METHODS):
        yield make_flag("file-read", call, f"calls `{snippet(call)}`")


def _url_arguments(call: ast.Call) -> Iterator[str]:
    for arg in [*call.args, *(kw.value for kw in call.keywords)]:
        text = literal_str(arg)
        if text is None and isinstance(arg, ast.JoinedStr) and arg.values:
            text = literal_str(arg.values[0])
        if text and text.strip().lower().startswith(_URL_PREFIXES):
            yield text if len(text) <= 60 else text[:57] + "..."


def sensitive_text_flags(node: ast.AST, text: str) -> Iterator[Flag]:
    """A string naming a datasite secret, however it is then used (read, written, sent)."""
    for pattern, rule, what in _SENSITIVE:
        if pattern.search(text):
            shown = text if len(text) <= 50 else text[:47] + "..."
            yield make_flag(rule, node, f"names {shown!r}, which is {what}", "high")
