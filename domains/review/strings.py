"""Pure operations on constants, so the review can spell out what hidden code builds.

Hostile code hides names from a reader: ``getattr(os, "sys" + "tem")``,
``bytes.fromhex("73797374656d").decode()``, ``"metsys"[::-1]``, or
``exec(base64.b64decode("..."))``. :class:`domains.review.names.Resolver` walks
such expressions and calls these functions to evaluate each step on constants.
Only pure, bounded operations on ``str``, ``bytes``, ``int`` and tuples are
known here: nothing of the submitted code ever runs, and an operation this
module does not know makes the value unknown (which the rules treat as a name
the reader cannot see).
"""

from __future__ import annotations

import ast
import base64
import binascii
import codecs
import math
import operator
import re
import zlib
from collections.abc import Callable, Iterable
from itertools import product
from typing import Any

MAX_LEN = 100_000  # longest constant the review builds; longer is "unknown"
MAX_VALUES = 16  # most alternatives one expression may stand for
MAX_COMBINATIONS = 1024  # most argument combinations one operation is tried on

UNKNOWN = object()  # an operation that failed or is not known


def _decompress(data: bytes) -> bytes:
    return zlib.decompressobj().decompress(data, MAX_LEN)  # bounded: no decompression bomb


def _codecs_decode(data: Any, encoding: str = "utf-8") -> Any:
    if encoding.replace("-", "_").lower() in ("zlib", "zlib_codec", "zip", "bz2", "bz2_codec"):
        return UNKNOWN  # decompression bombs: zlib.decompress is bounded, these are not
    return codecs.decode(data, encoding)


def _to_bytes(*args: Any) -> Any:
    if len(args) == 1 and isinstance(args[0], tuple):
        return bytes(args[0])
    if len(args) == 2 and isinstance(args[0], str):
        return args[0].encode(args[1])
    return UNKNOWN


def _to_str(*args: Any) -> Any:
    if len(args) == 1:
        return str(args[0])
    if len(args) == 2 and isinstance(args[0], bytes):
        return args[0].decode(args[1])
    return UNKNOWN


# Functions by dotted name (as review_names resolves them) -> pure implementation.
FUNCTIONS: dict[str, Callable[..., Any]] = {
    "bytes.fromhex": bytes.fromhex,
    "bytearray.fromhex": bytes.fromhex,
    "base64.b64decode": base64.b64decode,
    "base64.standard_b64decode": base64.standard_b64decode,
    "base64.urlsafe_b64decode": base64.urlsafe_b64decode,
    "base64.b32decode": base64.b32decode,
    "base64.b16decode": base64.b16decode,
    "base64.a85decode": base64.a85decode,
    "base64.b85decode": base64.b85decode,
    "base64.decodebytes": base64.decodebytes,
    "binascii.unhexlify": binascii.unhexlify,
    "binascii.a2b_hex": binascii.a2b_hex,
    "binascii.a2b_base64": binascii.a2b_base64,
    "codecs.decode": _codecs_decode,
    "zlib.decompress": _decompress,
    "chr": chr,
    "ord": ord,
    "str": _to_str,
    "bytes": _to_bytes,
    "bytearray": _to_bytes,
    "int": int,
    "reversed": lambda seq: tuple(reversed(seq)),
    "list": tuple,
    "tuple": tuple,
    "operator.add": operator.add,
    "operator.concat": operator.concat,
}

# Methods of str and bytes that only compute.
_METHODS = frozenset({"decode", "encode", "lower", "upper", "strip", "lstrip", "rstrip",
                      "replace", "join", "title", "capitalize", "swapcase", "casefold",
                      "removeprefix", "removesuffix", "zfill", "split", "format"})

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Mod: operator.mod,
    ast.FloorDiv: operator.floordiv,
    ast.BitXor: operator.xor,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
}


def _small(value: Any) -> Any:
    """``value`` if it is a constant small enough to keep, else unknown."""
    if isinstance(value, bytearray):
        value = bytes(value)
    if isinstance(value, list):
        value = tuple(value)
    if isinstance(value, bool) or not isinstance(value, (str, bytes, int, tuple)):
        return UNKNOWN
    if isinstance(value, int) and value.bit_length() > 64:
        return UNKNOWN
    if isinstance(value, (str, bytes, tuple)) and len(value) > MAX_LEN:
        return UNKNOWN
    if isinstance(value, tuple) and any(_small(v) is UNKNOWN for v in value):
        return UNKNOWN
    return value


def _wide_format(fmt: str | bytes) -> bool:
    """``"%*d"`` or ``"%99999999d"`` would build a huge string from a short constant."""
    text = fmt if isinstance(fmt, str) else fmt.decode("latin-1")
    return re.search(r"%[-+ #0]*(\*|\d{4,})", text) is not None


def _safe(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a known-pure operation; any failure (bad hex, huge result) is unknown."""
    if any(isinstance(a, str | bytes | tuple) and len(a) > MAX_LEN for a in args):
        return UNKNOWN
    if fn is operator.mul and any(isinstance(a, str | bytes | tuple) for a in args):
        count = next((a for a in args if isinstance(a, int)), 0)
        size = next((len(a) for a in args if isinstance(a, str | bytes | tuple)), 0)
        if count * size > MAX_LEN:
            return UNKNOWN
    if fn is operator.lshift and isinstance(args[-1], int) and args[-1] > 64:
        return UNKNOWN
    if fn is operator.mod and isinstance(args[0], str | bytes) and _wide_format(args[0]):
        return UNKNOWN
    try:
        return _small(fn(*args))
    except Exception:  # the constant does not decode: the value stays unknown
        return UNKNOWN


def combine(
    parts: Iterable[frozenset[Any] | None], fn: Callable[..., Any]
) -> frozenset[Any] | None:
    """Every result of ``fn`` over one choice from each part; None when any is unknown."""
    choices = list(parts)
    if any(c is None for c in choices):
        return None
    if math.prod(len(c) for c in choices if c is not None) > MAX_COMBINATIONS:
        return None  # too many alternatives to try: unknown, not slow
    results: set[Any] = set()
    for args in product(*[sorted(c, key=repr) for c in choices if c is not None]):
        value = fn(*args)
        if value is UNKNOWN:
            return None
        results.add(value)
        if len(results) > MAX_VALUES:
            return None
    return frozenset(results)


def call_function(name: str, args: list[frozenset[Any] | None]) -> frozenset[Any] | None:
    """Values of the known pure function ``name`` applied to constant arguments."""
    fn = FUNCTIONS.get(name)
    if fn is None:
        return None
    return combine(args, lambda *a: _safe(fn, *a))


def call_method(
    receiver: frozenset[Any] | None, method: str, args: list[frozenset[Any] | None]
) -> frozenset[Any] | None:
    """Values of ``receiver.method(*args)`` when the method only computes on strings."""
    if method not in _METHODS:
        return None

    def apply(target: Any, *a: Any) -> Any:
        if not isinstance(target, str | bytes) or not hasattr(target, method):
            return UNKNOWN
        if not _bounded(target, method, a):
            return UNKNOWN
        return _safe(getattr(target, method), *a)

    return combine([receiver, *args], apply)


def _bounded(target: str | bytes, method: str, args: tuple[Any, ...]) -> bool:
    """Whether ``target.method(*args)`` stays small: the review must not be made to hang."""
    if any(isinstance(a, int) and a > MAX_LEN for a in args):
        return False  # "x".zfill(10**9)
    if method == "format":
        return not any(c in target for c in ".[!:")  # "{0.__class__}", "{:>999999999}"
    if method == "replace":
        old = args[0] if args else b""
        new = args[1] if len(args) > 1 else b""
        return bool(old) and len(target) // len(old) * (len(new) + 1) <= MAX_LEN
    if method == "join":
        items = args[0] if args else ()
        return isinstance(items, tuple) and sum(
            len(i) + len(target) for i in items if isinstance(i, str | bytes)) <= MAX_LEN
    return True


def binary(left: frozenset[Any] | None, op: type, right: frozenset[Any] | None
           ) -> frozenset[Any] | None:
    fn = _BINOPS.get(op)
    if fn is None:
        return None
    return combine([left, right], lambda a, b: _safe(fn, a, b))


def subscript(base: frozenset[Any] | None, index: frozenset[Any] | None) -> frozenset[Any] | None:
    """``base[index]`` where ``index`` holds ints or ``slice`` triples."""
    def apply(seq: Any, key: Any) -> Any:
        if not isinstance(seq, str | bytes | tuple):
            return UNKNOWN
        if isinstance(key, tuple) and len(key) == 4 and key[0] == "slice":
            return _safe(lambda s: s[slice(*key[1:])], seq)
        return _safe(operator.getitem, seq, key) if isinstance(key, int) else UNKNOWN

    return combine([base, index], apply)


def as_text(value: Any) -> str | None:
    """A folded value as source text or a name: str as is, bytes as UTF-8."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return None
