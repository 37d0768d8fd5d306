"""The review's findings and its catalogue of rules: which names mean which capability.

A :class:`Flag` is one finding for the data owner. :data:`RULES` says, for each
capability the review looks for, how serious it is, what it means to a
hospital, and the dotted names (as :mod:`domains.review.names` resolves them)
that give code that capability. The checks that produce flags live in
:mod:`domains.review.rules`, :mod:`domains.review.files`,
:mod:`domains.review.dynamic` and :mod:`domains.review.taint`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache

from domains.review.calls import TRUSTED_RUNTIMES

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
# The first rule that matches a name wins, so the order matters.
RULES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "network": ("high", "network access", (
        "socket", "ssl", "urllib", "urllib3", "http", "httpx", "requests", "aiohttp",
        "ftplib", "smtplib", "telnetlib", "paramiko", "websocket", "websockets", "grpc",
        "asyncio.open_connection", "asyncio.open_unix_connection", "asyncio.start_server",
        "xmlrpc", "socketserver", "poplib", "imaplib", "nntplib", "webbrowser", "pycurl",
        "zmq", "boto3", "botocore", "torch.hub", "torch.distributed", "dns", "scapy",
        "wsgiref", "tornado", "twisted", "multiprocessing.connection",
    )),
    "subprocess": ("high", "runs another program or process", (
        "subprocess", "os.system", "os.popen", "os.exec*", "os.spawn*", "os.fork*",
        "os.posix_spawn*", "os.startfile", "os.kill", "os.killpg", "pty", "multiprocessing",
        "commands", "asyncio.create_subprocess_*", "concurrent.futures.ProcessPoolExecutor",
        "platform.popen", "torch.multiprocessing", "pexpect", "plumbum", "signal.pthread_kill",
    )),
    "background": ("high", "keeps code running after the call returns, where it can watch "
                   "later jobs and the datasite", (
        "threading", "_thread", "concurrent.futures.ThreadPoolExecutor",
        "concurrent.futures.thread", "atexit", "signal.signal", "signal.alarm",
        "signal.setitimer", "signal.set_wakeup_fd", "sched", "asyncio.create_task",
        "asyncio.ensure_future", "asyncio.get_event_loop", "asyncio.new_event_loop",
        "asyncio.get_running_loop", "sys.settrace", "sys.setprofile", "sys.addaudithook",
        "weakref.finalize", "gc.callbacks", "os.register_at_fork", "faulthandler",
    )),
    "environment": ("high", "reads the datasite's environment, which holds its signing key "
                    "and admin password", (
        "os.environ", "os.environb", "os.getenv", "os.getenvb", "os.putenv", "os.unsetenv",
        "posix.environ", "posix.putenv", "posix.unsetenv", "nt.environ",
    )),
    "deserialization": ("high", "unpickling data runs whatever code the data names", (
        "pickle.load", "pickle.loads", "pickle.Unpickler", "_pickle", "cPickle", "dill.load*",
        "dill.Unpickler", "cloudpickle.load*", "joblib.load", "marshal.load", "marshal.loads",
        "shelve", "pandas.read_pickle", "jsonpickle.decode", "jsonpickle.loads",
        "yaml.unsafe_load*", "yaml.UnsafeLoader", "yaml.full_load*", "yaml.FullLoader",
        "yaml.Loader", "copyreg", "torch.package",
    )),
    "internals": ("high", "reaches the datasite's own code and state: its stores of images, "
                  "keys, ε ledgers and other users' requests", (
        "domains", "syft", "privacy", "orchestrator", "medsyft",
    )),
    "file-write": ("medium", "writes or deletes files on the datasite", (
        "os.remove", "os.unlink", "os.rename", "os.renames", "os.replace", "os.makedirs",
        "os.mkdir", "os.rmdir", "os.removedirs", "os.chmod", "os.chown", "os.link",
        "os.symlink", "os.truncate", "os.mkfifo", "os.mknod", "os.write", "os.ftruncate",
        "os.utime", "os.fchmod", "os.fchown", "os.lchown", "os.lchmod", "shutil.copy*",
        "shutil.move", "shutil.rmtree", "shutil.make_archive", "shutil.unpack_archive",
        "shutil.chown", "numpy.save*", "numpy.lib.format.open_memmap", "torch.save",
        "torch.jit.save", "pickle.dump", "dill.dump", "cloudpickle.dump", "joblib.dump",
        "json.dump", "marshal.dump", "tempfile.NamedTemporaryFile", "tempfile.TemporaryFile",
        "tempfile.mkstemp", "tempfile.mkdtemp", "tempfile.TemporaryDirectory",
        "tempfile.SpooledTemporaryFile", "sqlite3", "dbm", "logging.FileHandler",
        "logging.handlers", "imageio.imwrite", "imageio.v2.imwrite", "imageio.v3.imwrite",
        "cv2.imwrite", "pydicom.dcmwrite", "nibabel.save", "SimpleITK.WriteImage",
        "tifffile.imwrite", "skimage.io.imsave", "matplotlib.pyplot.imsave", "pandas.HDFStore",
    )),
    "file-read": ("medium", "reads files on the datasite that the approval does not cover", (
        "numpy.load", "numpy.fromfile", "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromregex",
        "numpy.memmap", "numpy.DataSource", "numpy.lib.npyio", "pandas.read_*", "torch.load",
        "torch.jit.load", "safetensors", "PIL.Image.open", "imageio", "cv2.imread*",
        "pydicom.dcmread", "pydicom.read_file", "nibabel.load", "SimpleITK.ReadImage",
        "skimage.io.imread", "tifffile.imread", "scipy.io.loadmat", "os.listdir", "os.scandir",
        "os.walk", "os.fwalk", "os.read", "os.readlink", "glob", "linecache", "fileinput",
        "mmap", "monai.transforms.LoadImage*", "torchvision.io.read_*",
    )),
    "eval-exec": ("high", "runs code assembled at run time", (
        "eval", "exec", "compile", "__builtins__", "builtins", "breakpoint", "types.CodeType",
        "types.FunctionType", "types.LambdaType", "codeop", "code.interact",
        "code.Interactive*", "code.compile_command", "timeit", "pdb", "sys._getframe",
        "sys._current_frames", "inspect.currentframe", "inspect.stack", "inspect.trace",
        "inspect.getouterframes", "inspect.getinnerframes", "traceback.walk_stack",
        "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    )),
    "dynamic-import": ("high", "loads code or native libraries at run time", (
        "__import__", "importlib", "imp", "_imp", "ctypes", "_ctypes", "cffi", "runpy",
        "zipimport", "sys.modules", "sys.path", "sys.meta_path", "sys.path_hooks",
        "sys.path_importer_cache", "site", "pkgutil", "pkg_resources", "pydoc.locate",
        "numpy.ctypeslib", "os.add_dll_directory", "pip", "torch.utils.cpp_extension",
        "torch.ops.load_library",
    )),
    "dynamic-access": ("high", "dynamic access: the reviewer cannot see what runs", ()),
    "top-level-code": ("medium", "PySyft runs every top-level statement of a submission on the "
                       "datasite, not only the function", ()),
}


def _matches(name: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern or name.startswith(pattern + ".")


# Modules that other modules re-export as attributes (``os.path.os``, ``shutil.os``): a
# dotted name through one of them is also that module's name.
_REROOTS = frozenset({"os", "posix", "nt", "sys", "subprocess", "socket", "builtins",
                      "importlib", "ctypes", "pickle", "marshal", "shutil", "threading",
                      "multiprocessing", "urllib", "pty", "signal", "gc", "inspect"})
_MODULE_ALIASES = {"posix": "os", "nt": "os", "__builtin__": "builtins"}


def _canonical(name: str) -> str:
    module, dot, rest = name.partition(".")
    module = _MODULE_ALIASES.get(module, module)
    if module == "builtins" and rest:
        return rest
    return module + dot + rest


def _direct_rule(name: str) -> str | None:
    for rule, (_, _, patterns) in RULES.items():
        if any(_matches(name, p) for p in patterns):
            return rule
    return None


@lru_cache(maxsize=4096)
def rule_for(name: str) -> str | None:
    """The rule a dotted name falls under, or None; medsyft's own runtime entry points are none.

    >>> rule_for("os.path.os.system"), rule_for("posix.system"), rule_for("numpy.mean")
    ('subprocess', 'subprocess', None)
    """
    if name in TRUSTED_RUNTIMES:
        return None
    parts = name.split(".")
    for start in range(len(parts)):
        if start and parts[start] not in _REROOTS:
            continue
        rule = _direct_rule(_canonical(".".join(parts[start:])))
        if rule:
            return rule
    return None


def rules_under(module: str) -> str | None:
    """The rule of any name inside ``module``: ``from os import *`` hides ``os.system``."""
    for rule, (_, _, patterns) in RULES.items():
        if any(p.startswith(module + ".") or _matches(module, p) for p in patterns):
            return rule
    return None


# Names under eval-exec that reach objects rather than run strings.
_INTROSPECTION = ("sys._getframe", "sys._current_frames", "inspect.", "traceback.walk_stack",
                  "gc.")
INTERNALS = "can reach any function or variable of the datasite process"


def meaning_for(rule: str, name: str) -> str | None:
    """What a matched name means when it is not the rule's usual meaning, else None."""
    if rule == "eval-exec" and name.startswith(_INTROSPECTION):
        return INTERNALS
    return None


def make_flag(
    rule: str, node: ast.AST, what: str, severity: str | None = None, meaning: str | None = None
) -> Flag:
    """``what`` names the call; ``meaning`` says why an owner should care (the rule's default)."""
    default, rule_meaning, _ = RULES[rule]
    line = getattr(node, "lineno", 1)
    return Flag(rule, severity or default, line, f"{what} ({meaning or rule_meaning}) at line {line}")
