"""The label schema: from ``--label-names``, or from the labels themselves when they are unambiguous.

Every format ends up with class indices ``0..K-1`` into a list of names. Numbers are the
trap: in chest X-ray label sets ``-1`` usually means "uncertain", and 1-based labels are
common, so numeric labels are taken as class indices only when they are exactly ``0..K-1``.
Anything else needs the data owner to say what each value means, with a mapping::

    --label-names=-1:uncertain,0:normal,1:pneumonia     # schema [uncertain, normal, pneumonia]
    --label-names=0:normal,1:pneumonia,-1:pneumonia     # uncertain counted as positive

The plain form ``normal,pneumonia`` lists the names in index order.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from domains.data.formats.imageset import publish_error
from domains.errors import PublishError

LabelNames = Sequence[str] | Mapping[str, str]
# (where the label was found, how to name it), e.g. (".../img3.dcm", "label '-1'")
Subject = Callable[[str], tuple[str | Path, str]]


def parse_label_names(text: str) -> list[str] | dict[str, str]:
    """``--label-names``: ``"a,b"`` (names in index order) or ``"VALUE:NAME,..."`` (a mapping).

    Raises:
        PublishError: for an empty entry, a mix of both forms, or a value named twice.

    >>> parse_label_names("normal,pneumonia")
    ['normal', 'pneumonia']
    >>> parse_label_names("0:normal,1:pneumonia,-1:uncertain")
    {'0': 'normal', '1': 'pneumonia', '-1': 'uncertain'}
    """
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise PublishError(f"--label-names {text!r} has an empty entry; separate names with single commas")
    pairs = [tuple(p.strip() for p in t.split(":", 1)) for t in items]
    if all(len(p) == 1 for p in pairs):
        return items
    if not all(len(p) == 2 and all(p) for p in pairs):
        raise PublishError(
            f"--label-names {text!r} mixes NAME and VALUE:NAME entries; use one form, "
            "e.g. normal,pneumonia or -1:uncertain,0:normal,1:pneumonia"
        )
    mapping: dict[str, str] = {}
    for value, name in pairs:
        if canonical(value) in mapping:
            raise PublishError(f"--label-names names the value {value!r} twice; name each value once")
        mapping[canonical(value)] = name
    return mapping


def canonical(value: str) -> str:
    """One spelling per label value: ``"01"``, ``"+1"`` and ``"1"`` are the same class."""
    value = value.strip()
    return str(int(value)) if is_int(value) else value


def is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def schema(label_names: LabelNames) -> list[str]:
    """The names in index order; a mapping's names in the order first written."""
    if isinstance(label_names, Mapping):
        return list(dict.fromkeys(label_names.values()))
    return list(label_names)


def check_label_names(label_names: LabelNames, where: str | Path) -> None:
    """Refuse an empty schema, a repeated name in the plain form, or an empty value or name."""
    if isinstance(label_names, Mapping):
        keys = [canonical(k) for k in label_names]
        if not label_names or not all(keys) or not all(label_names.values()) or len(set(keys)) != len(keys):
            raise publish_error(
                where, f"label_names must map distinct values to names (got {dict(label_names)})",
                "write VALUE:NAME once per value, e.g. -1:uncertain,0:normal,1:pneumonia",
            )
        return
    if not label_names or len(set(label_names)) != len(label_names) or not all(label_names):
        raise publish_error(
            where, f"label_names must be distinct and non-empty (got {list(label_names)})",
            "list each class once",
        )


def class_indices(
    values: Sequence[str],
    label_names: LabelNames | None,
    subject: Subject,
    *,
    by_name: bool = True,
    default_name: Callable[[int], str] = str,
) -> tuple[list[str], dict[str, int]]:
    """The schema and the class index of each distinct raw label value.

    Args:
        values: the distinct raw labels as text (npz integers as ``str(int)``).
        label_names: the owner's names (plain or mapping form), or ``None`` to derive them.
        subject: where the first image with a value is, for the error message.
        by_name: whether a raw label may be a schema name (text sources) and not only an index.
        default_name: names of derived classes ``0..K-1``.

    Raises:
        PublishError: naming the first value the schema does not cover.
    """
    if label_names is None:
        return _derived(values, subject, default_name)
    names = schema(label_names)
    if isinstance(label_names, Mapping):
        named = {canonical(k): names.index(v) for k, v in label_names.items()}
        return names, {v: _mapped(v, named, names, label_names, subject, by_name) for v in values}
    return names, {v: _listed(v, names, subject, by_name) for v in values}


def _derived(
    values: Sequence[str], subject: Subject, default_name: Callable[[int], str]
) -> tuple[list[str], dict[str, int]]:
    if not all(is_int(v) for v in values):
        names = sorted(set(values))
        return names, {v: names.index(v) for v in values}
    ints = sorted({int(v) for v in values})
    for index, value in enumerate(ints):
        if index != value:  # a negative value, or a gap before this value
            bad = next(v for v in values if int(v) == value)
            where, what = subject(bad)
            example = ",".join(f"{i}:NAME" for i in ints)
            raise publish_error(
                where,
                f"{what} is not a class index: numeric labels must be 0..{len(ints) - 1} with each "
                f"used, and these are {ints} (in chest X-ray sets -1 often means 'uncertain')",
                f"say what each value means, e.g. --label-names={example}",
            )
    return [default_name(i) for i in ints], {v: int(v) for v in values}


def _listed(value: str, names: list[str], subject: Subject, by_name: bool) -> int:
    if by_name and value in names:
        return names.index(value)
    if is_int(value) and 0 <= int(value) < len(names):
        return int(value)
    where, what = subject(value)
    also = " (nor an index" if by_name else " (indices"
    raise publish_error(
        where, f"{what} is not in the schema {names}{also} 0..{len(names) - 1})",
        "fix the label, or give --label-names with every class (VALUE:NAME for other values)",
    )


def _mapped(
    value: str,
    named: dict[str, int],
    names: list[str],
    label_names: Mapping[str, str],
    subject: Subject,
    by_name: bool,
) -> int:
    if canonical(value) in named:
        return named[canonical(value)]
    if by_name and value in names:
        return names.index(value)
    where, what = subject(value)
    raise publish_error(
        where, f"{what} is not named by --label-names {dict(label_names)}",
        f"add {value}:NAME to --label-names",
    )
