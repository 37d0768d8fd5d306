"""``--label-names``: both forms, and the refusals that keep a number from silently becoming a name."""

from __future__ import annotations

import pytest

from domains.data.formats import parse_label_names
from domains.data.formats.labels import class_indices
from domains.errors import PublishError


def test_parse_label_names_plain_and_mapping() -> None:
    assert parse_label_names("normal, pneumonia") == ["normal", "pneumonia"]
    assert parse_label_names("-1:uncertain,0:normal,1:pneumonia") == {
        "-1": "uncertain", "0": "normal", "1": "pneumonia"}
    assert parse_label_names("01:a,+2:b") == {"1": "a", "2": "b"}  # one spelling per number
    assert parse_label_names("0:ratio 1:2") == {"0": "ratio 1:2"}  # a name may hold a colon


@pytest.mark.parametrize(("text", "needle"), [
    ("normal,,pneumonia", "empty entry"),
    ("normal,1:pneumonia", "mixes NAME and VALUE:NAME"),
    ("0:normal,:pneumonia", "mixes NAME and VALUE:NAME"),
    ("1:a,01:b", "names the value '01' twice"),
])  # fmt: skip
def test_parse_label_names_refusals(text: str, needle: str) -> None:
    with pytest.raises(PublishError, match=needle) as err:
        parse_label_names(text)
    assert str(err.value).startswith("--label-names ") and "\n" not in str(err.value)


def _where(value: str) -> tuple[str, str]:
    return "src", f"label {value!r}"


@pytest.mark.parametrize(("values", "bad"), [
    (["-1", "0"], "-1"),          # uncertain next to negative
    (["1", "2"], "1"),            # 1-based
    (["0", "2"], "2"),            # a gap: class 1 would be silently empty
])  # fmt: skip
def test_numeric_labels_must_be_0_to_k_minus_1(values: list[str], bad: str) -> None:
    with pytest.raises(PublishError, match=rf"src: label '{bad}' is not a class index"):
        class_indices(values, None, _where)
    names, index = class_indices(values, {v: f"c{v}" for v in values}, _where)
    assert names == [f"c{v}" for v in values] and sorted(index.values()) == [0, 1]


def test_text_labels_sort_and_index_by_name_or_number() -> None:
    assert class_indices(["b", "a"], None, _where) == (["a", "b"], {"b": 1, "a": 0})
    assert class_indices(["1", "normal"], ["normal", "pneumonia"], _where)[1] == {"1": 1, "normal": 0}
    with pytest.raises(PublishError, match=r"label '2' is not in the schema \['normal', 'pneumonia'\]"):
        class_indices(["2"], ["normal", "pneumonia"], _where)


def test_doctests_of_the_input_hardening_modules() -> None:
    import doctest

    from domains.data.formats import labels, limits, paths

    for module in (labels, limits, paths):
        assert doctest.testmod(module).failed == 0, module.__name__
