"""From pydantic's errors to one line that names the ``job.toml`` table and key as the user wrote them."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from orchestrator.config_tables import (
    Broken,
    JobFile,
    _BaselineTable,
    _EvaluationTable,
    _JobTable,
    _PrivacyTable,
    _SiteTable,
    _TLSTable,
    _TrackingTable,
)

_MODELS: dict[str, type[BaseModel]] = {
    "job": _JobTable, "sites": _SiteTable, "tls": _TLSTable, "privacy": _PrivacyTable,
    "baseline": _BaselineTable, "evaluation": _EvaluationTable, "tracking": _TrackingTable}
_LABELS = {"job": "[job]", "sites": "[[sites]]", "tls": "[tls]", "privacy": "[privacy]",
           "baseline": "[baseline]", "evaluation": "[evaluation]", "tracking": "[tracking]"}
_WANTED = {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
           "string_type": "a string"}
_SIGNS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _where(file: Path, loc: tuple[Any, ...]) -> str:
    """``job.toml [job]`` or ``job.toml [[sites]] #2`` for the table an error location is in."""
    if not loc:
        return str(file)
    if loc[0] == "sites" and len(loc) > 1 and isinstance(loc[1], int):
        return f"{file} [[sites]] #{loc[1] + 1}"
    return f"{file} {_LABELS[loc[0]]}"


def _model(table: tuple[Any, ...]) -> type[BaseModel]:
    return _MODELS[table[0]] if table else JobFile


def _range(table: tuple[Any, ...], key: str) -> str:
    """``>= 1``, ``> 0`` or ``in (0, 1]``, from the bounds the field declares."""
    meta = _model(table).model_fields[key].metadata
    bound = {k: getattr(m, k) for m in meta for k in _SIGNS if hasattr(m, k)}
    low = [k for k in bound if k in ("gt", "ge")]
    high = [k for k in bound if k in ("lt", "le")]
    if low and high:  # an interval: "in (0, 1]" reads better than "> 0 and <= 1"
        opening, closing = "(" if low[0] == "gt" else "[", ")" if high[0] == "lt" else "]"
        return f"in {opening}{bound[low[0]]}, {bound[high[0]]}{closing}"
    return " and ".join(f"{_SIGNS[k]} {v}" for k, v in bound.items())


def _unknown(file: Path, table: tuple[Any, ...], errors: list[ErrorDetails]) -> str:
    """Typos are errors: a misspelt ``noise_multipler`` would otherwise train with the default σ."""
    unknown = sorted(str(e["loc"][-1]) for e in errors if e["loc"][:-1] == table)
    known = sorted(_model(table).model_fields)
    close = difflib.get_close_matches(unknown[0], known, n=1)
    if not table:
        hint = f"did you mean {_LABELS[close[0]]}?" if close else f"known: {', '.join(_LABELS.values())}"
        return f"{file}: unknown table or key(s) {unknown}; {hint}"
    hint = f"did you mean {close[0]!r}?" if close else f"known: {known}"
    return f"{_where(file, table)}: unknown key(s) {unknown}; {hint}"


def _describe(file: Path, error: ErrorDetails) -> str:
    kind, loc, value = error["type"], tuple(error["loc"]), error["input"]
    if kind == "value_error":
        broken = error.get("ctx", {}).get("error")
        table = (broken.table,) if isinstance(broken, Broken) and broken.table else loc
        return f"{_where(file, table)}: {broken}"
    if kind == "model_type":
        got = f"{loc[0]} = {value!r}" if len(loc) == 1 else repr(value)
        return f"{_where(file, loc)} must be a table (got {got})"
    if kind == "list_type":
        return f"{file}: sites must be [[sites]] tables, one per datasite (got {type(value).__name__})"
    table, key = loc[:-1], str(loc[-1])
    if kind == "missing":
        example = json.dumps((_model(table).model_fields[key].examples or ["..."])[0])
        return f"{_where(file, table)} needs {key} = {example}"
    if kind in _WANTED:
        return f"{_where(file, table)}: {key} must be {_WANTED[kind]} (got {value!r})"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected")
        return f"{_where(file, table)}: {key} must be one of {expected} (got {value!r})"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{_where(file, table)}: {key} must be {_range(table, key)} (got {value!r})"
    return f"{_where(file, table)}: {key}: {error['msg']} (got {value!r})"


def one_line(file: Path, exc: ValidationError) -> str:
    """The first problem; an unknown key first of all, since a typo explains the errors after it."""
    errors = exc.errors()
    extra = [e for e in errors if e["type"] == "extra_forbidden"]
    if extra:
        return _unknown(file, tuple(extra[0]["loc"][:-1]), extra)
    return _describe(file, errors[0])
