"""The client's signature memo: equal bytes give one shared, equal signature; a signature whose
default could change in place is rebuilt every time. Real PySyft serde, no server."""

from __future__ import annotations

import inspect

import pytest

from domains.shared import syft_client_speedups as speedups


def _blob(signature: inspect.Signature) -> bytes:
    from syft.serde.serialize import _serialize

    return bytes(_serialize(signature, to_bytes=True))


def _deserialize(blob: bytes) -> inspect.Signature:
    from syft.serde.deserialize import _deserialize as deserialize

    result: inspect.Signature = deserialize(blob, from_bytes=True)
    return result


def test_equal_bytes_give_one_equal_signature() -> None:
    assert speedups.apply()
    def f(uid: str, count: int = 3, *, name: str | None = None, flags: tuple[int, ...] = (1, 2)) -> None: ...
    signature = inspect.signature(f)
    first, second = _deserialize(_blob(signature)), _deserialize(_blob(signature))
    assert first is second
    assert [(p.name, p.kind, p.default) for p in first.parameters.values()] == [
        (p.name, p.kind, p.default) for p in signature.parameters.values()]
    assert speedups.apply()  # idempotent: one memo, not a memo of a memo


def test_a_mutable_default_is_never_shared() -> None:
    speedups.apply()
    def g(items: list[int] = [1]) -> None: ...  # noqa: B006 - the point of the test
    blob = _blob(inspect.signature(g))
    first, second = _deserialize(blob), _deserialize(blob)
    assert first is not second and first == second
    assert not speedups.shareable(first)


@pytest.mark.parametrize(("default", "shareable"), [
    (None, True), (3, True), ("x", True), ((1, "a"), True), (inspect.Parameter.empty, True),
    ([1], False), ({"a": 1}, False), ((1, [2]), False), ({1}, False),
])
def test_what_counts_as_shareable(default: object, shareable: bool) -> None:
    parameter = inspect.Parameter("a", inspect.Parameter.KEYWORD_ONLY, default=default)
    assert speedups.shareable(inspect.Signature([parameter])) is shareable


def test_switched_off_it_applies_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSYFT_SYFT_SPEEDUPS", "0")
    assert speedups.apply() is False
