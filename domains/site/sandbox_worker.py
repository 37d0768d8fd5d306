"""What runs inside the sandbox: load the inputs, run the approved function, send its result back.

:mod:`domains.site.sandbox` copies this file into a fresh job directory and runs it inside
bubblewrap as ``python -I /scratch/in/worker.py /scratch/in``. It therefore imports nothing
from medsyft (the package is not in the sandbox), only the standard library and, when a value
is an array, numpy.

One encoding carries values both ways: JSON in which every value is tagged with its kind,
and numpy arrays as ``.npy`` without pickles (files in the job directory on the way in,
base64 inside the JSON frame on the way out). The datasite decodes what comes back with the
same strict :func:`decode`, because once the approved function has run, this process belongs
to whoever wrote that function: nothing it sends is ever unpickled.

The limits are set first, before any input is read or any submitted code runs; no process
without privileges can raise them again.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import resource
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
CODE = "code.py"
MAX_DEPTH = 64
MAX_TEXT = 64 * 1024  # of the code's captured prints, per stream, sent back
_BLOB_KEY = re.compile(r"^a[0-9]{1,9}$")
JSON_KINDS = "numpy arrays and JSON values (None, bool, int, float, str, list, tuple, dict)"


# -- the encoding ----------------------------------------------------------------------
def encode(value: Any, store_blob: Callable[[Any], str], depth: int = 0) -> Any:
    """*value* as tagged JSON; arrays go to *store_blob*, which returns their key."""
    if depth > MAX_DEPTH:
        raise ValueError(f"values nest deeper than {MAX_DEPTH} levels")
    np = sys.modules.get("numpy")
    if np is not None and isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise ValueError("numpy arrays of Python objects cannot be sent (they would need pickle)")
        return {"ndarray": store_blob(np.asarray(value))}
    if np is not None and isinstance(value, np.generic):
        value = value.item()  # numpy scalars travel as the Python number they hold
    if value is None or isinstance(value, bool | int | float | str):
        return {"value": _scalar(value)}
    if isinstance(value, list | tuple):
        kind = "list" if isinstance(value, list) else "tuple"
        return {kind: [encode(v, store_blob, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(k, store_blob, depth + 1), encode(v, store_blob, depth + 1)]
                         for k, v in value.items()]}
    raise ValueError(f"a {type(value).__module__}.{type(value).__qualname__} cannot be sent; "
                     f"only {JSON_KINDS}")


def _scalar(value: Any) -> Any:
    """The plain Python value of a scalar (subclasses such as numpy's float64 lose their class)."""
    for kind in (bool, int, float, str):
        if isinstance(value, kind):
            return kind(value)
    return None


def decode(tagged: Any, load_blob: Callable[[str], Any], depth: int = 0) -> Any:
    """The value :func:`encode` tagged; anything else is refused with ValueError."""
    if depth > MAX_DEPTH:
        raise ValueError(f"values nest deeper than {MAX_DEPTH} levels")
    if not isinstance(tagged, dict) or len(tagged) != 1:
        raise ValueError("not a tagged value")
    (kind, body), = tagged.items()
    if kind == "value" and (body is None or isinstance(body, bool | int | float | str)):
        return body
    if kind in ("list", "tuple") and isinstance(body, list):
        items = [decode(v, load_blob, depth + 1) for v in body]
        return items if kind == "list" else tuple(items)
    if kind == "dict" and isinstance(body, list) and all(isinstance(p, list) and len(p) == 2 for p in body):
        pairs = [(decode(k, load_blob, depth + 1), decode(v, load_blob, depth + 1)) for k, v in body]
        try:
            return dict(pairs)
        except TypeError:
            raise ValueError("a dict key is not hashable") from None
    if kind == "ndarray" and isinstance(body, str) and _BLOB_KEY.match(body):
        return load_blob(body)
    raise ValueError(f"unknown or malformed tagged value {kind!r}")


def read_npy(data: bytes) -> Any:
    """An array from ``.npy`` bytes, checked before anything is allocated: no pickles, no
    zip archives, and the header's shape must account for exactly the bytes that follow."""
    import numpy as np

    fp = io.BytesIO(data)
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    if dtype.hasobject:
        raise ValueError("the array holds Python objects")
    count = 1
    for side in shape:
        count *= int(side)
    if count * dtype.itemsize != len(data) - fp.tell():
        raise ValueError("the array's header does not match its data")
    fp.seek(0)
    return np.lib.format.read_array(fp, allow_pickle=False)


def write_npy(array: Any) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=False)
    return buffer.getvalue()


# -- the run ---------------------------------------------------------------------------
def set_limits(limits: dict[str, int]) -> None:
    """Address space and CPU time for this process and all it starts; no core files."""
    memory = int(limits["memory_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 2))  # SIGXCPU, then SIGKILL
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def call(code: str, function: str, kwargs: dict[str, Any]) -> Any:
    """Run the approved code as PySyft's ``execute_byte_code`` does: define, then call."""
    scope: dict[str, Any] = {"kwargs": kwargs}
    exec(code, {}, scope)  # noqa: S102  (this is the sandbox: running it is the point)
    return scope[function](**kwargs)


def run(job: Path) -> dict[str, Any]:
    """The frame for the datasite: the result (or the error) and what the code printed."""
    manifest = json.loads((job / MANIFEST).read_text())
    set_limits(manifest["limits"])
    printed_out, printed_err = io.StringIO(), io.StringIO()
    frame: dict[str, Any]
    try:
        kwargs = decode(manifest["kwargs"], lambda key: read_npy((job / f"{key}.npy").read_bytes()))
        code = (job / CODE).read_text()
        sys.stdout, sys.stderr = printed_out, printed_err
        try:
            result = call(code, manifest["function"], kwargs)
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
        frame = _result_frame(result)
    except BaseException as exc:  # the scientist's code may raise anything, SystemExit included
        frame = {"ok": False, "error": type(exc).__name__, "traceback": traceback.format_exc()}
    frame["stdout"] = printed_out.getvalue()[-MAX_TEXT:]
    frame["stderr"] = printed_err.getvalue()[-MAX_TEXT:]
    return frame


def _result_frame(result: Any) -> dict[str, Any]:
    blobs: dict[str, str] = {}

    def store(array: Any) -> str:
        key = f"a{len(blobs)}"
        blobs[key] = base64.b64encode(write_npy(array)).decode("ascii")
        return key

    try:
        return {"ok": True, "result": encode(result, store), "blobs": blobs}
    except ValueError as exc:
        return {"ok": False, "error": "UnsupportedResult", "traceback": f"the result: {exc}"}


def main(argv: list[str]) -> int:
    # The frame goes out on the original stdout; anything the code writes to file
    # descriptor 1 itself (os.write, subprocesses) lands on stderr, which the datasite logs.
    channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    frame = run(Path(argv[1]))
    json.dump(frame, channel)
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
