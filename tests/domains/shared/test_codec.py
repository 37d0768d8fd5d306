"""The one codec: every value kind round-trips, every older form still reads, bad forms are named."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from domains.runtime.call_log import CallLog
from domains.shared import codec
from domains.shared.errors import CodecError
from domains.shared.kinds import Kind, register_kind
from domains.shared.plain_model import PlainModel
from domains.shared.signed_round import SignedRound
from privacy.he import EncryptedVector, load_context
from privacy.secagg_messages import SignedPart

WEIGHTS = st.dictionaries(
    st.text("abcdefgh._", min_size=1, max_size=8),
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4),
               elements=st.floats(-1e6, 1e6, width=32)),
    max_size=5,
)


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A federation's keys, two signed parts of call 2 and the recoveries of the third site."""
    from privacy.ceremony import init_federation
    from privacy.roster import load_site_kit
    from privacy.secagg import make_part, recover_masks

    keys = init_federation(tmp_path_factory.mktemp("codec") / "keys", ["a", "b", "c"])
    kits = {n: load_site_kit(f) for n, f in keys.kits.items()}
    hospital = load_context(keys.secret_path)
    parts = {n: make_part(kits[n], hospital, np.linspace(-1, 1, 5000), weight=1 / 3, bound=4.0, job_id="j",
                          call=2, round_sites=["a", "b", "c"]) for n in ("a", "b")}
    recoveries = tuple(recover_masks(kits[n], parts[n], survivors=["a", "b"]) for n in ("a", "b"))
    return {"hospital": hospital, "parts": parts,
            "round": SignedRound(call=2, parts=(parts["a"], parts["b"]), recoveries=recoveries)}


def _same(a: Any, b: Any) -> bool:
    """Equal values: signed parts compare by statement and ciphertext (their dataclass eq does too)."""
    return (a.statement() == b.statement() and a.vector == b.vector) if isinstance(a, SignedPart) else a == b


# -- round trips ----------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(WEIGHTS)
def test_a_plaintext_model_round_trips_through_every_form(weights: dict[str, np.ndarray]) -> None:
    model = PlainModel.from_weights(weights)
    assert model.vector.dtype == np.float32 and [k for k, _ in model.layout] == sorted(weights)
    assert all(np.array_equal(model.to_weights()[k], weights[k]) for k in weights)
    meta, arrays = codec.encode(model)
    assert codec.decode(json.loads(json.dumps(meta)), arrays) == model  # the metadata is JSON
    wire = codec.to_wire(model)
    assert set(wire) == {"format", "layout", "vector"} and wire["vector"] is model.vector  # one array
    assert codec.from_wire(wire) == model
    with tempfile.TemporaryDirectory() as folder:
        codec.to_npz(Path(folder) / "m.npz", model, fields={"n_train": np.int64(3), "share": np.arange(2)})
        stored = codec.read_npz(Path(folder) / "m.npz")
    assert stored.value == model and stored.fields["n_train"] == 3
    assert stored.fields["share"].tolist() == [0, 1]


@settings(max_examples=6, deadline=None)
@given(st.integers(1, 9000), st.floats(0.01, 1.0))
def test_an_encrypted_vector_round_trips_through_every_form(fed: dict[str, Any], length: int,
                                                             weight: float) -> None:
    encrypted = fed["hospital"].encrypt_weighted(np.linspace(-1, 1, length), weight=weight, bound=4.0)
    meta, arrays = codec.encode(encrypted)
    assert list(arrays) == ["chunks"] and arrays["chunks"].dtype == np.uint8  # one array, packed
    assert codec.decode(json.loads(json.dumps(meta)), arrays) == encrypted
    assert codec.from_wire(codec.to_wire(encrypted)) == encrypted
    with tempfile.TemporaryDirectory() as folder:
        codec.to_npz(Path(folder) / "v.npz", encrypted)
        assert codec.from_npz(Path(folder) / "v.npz").digest() == encrypted.digest()


def test_signed_parts_and_rounds_round_trip(fed: dict[str, Any], tmp_path: Path) -> None:
    part, signed = fed["parts"]["a"], fed["round"]
    for value in (part, signed):
        meta, arrays = codec.encode(value)
        assert list(arrays) == ["chunks"]  # a round packs every part's ciphertext into one array
        assert _same(codec.decode(json.loads(json.dumps(meta)), arrays), value)
        assert _same(codec.from_wire(codec.to_wire(value)), value)
        codec.to_npz(tmp_path / "x.npz", value)
        assert _same(codec.from_npz(tmp_path / "x.npz"), value)
    back = codec.from_npz(tmp_path / "x.npz")
    assert [p.statement() for p in back.parts] == [p.statement() for p in signed.parts]
    assert back.recoveries == signed.recoveries and codec.nbytes(back) == signed.nbytes
    header, vector = codec.split_part(part)  # a call's result: the header beside the ciphertext
    assert "vector" not in header and _same(codec.decode_update({"part": header, "weights": vector}), part)


def test_a_result_update_decodes_once_in_each_form(fed: dict[str, Any]) -> None:
    model = PlainModel.from_weights({"w": np.arange(4, dtype=np.float32).reshape(2, 2)})
    assert codec.decode_update({"weights": codec.to_wire(model)}) == model
    assert codec.decode_update({"weights": None}) is None  # the final call evaluates only
    bare = {"weights": model.vector}  # an older datasite, or a call it stored before the codec
    assert codec.decode_update(bare, layout=model.layout) == model
    with pytest.raises(CodecError, match="a bare vector carries no layout"):
        codec.decode_update(bare)


# -- older forms ------------------------------------------------------------------------------
def _old_ledger_result(path: Path, result: dict[str, Any], *, per_chunk: bool = False) -> None:
    """``call-N.npz`` as the ledger wrote it before the codec (``per_chunk``: before packing too)."""
    weights = result.get("weights")
    meta = {k: v for k, v in result.items() if k != "weights" and not isinstance(v, np.ndarray)}
    arrays = {f"a::{k}": v for k, v in result.items() if k != "weights" and isinstance(v, np.ndarray)}
    if isinstance(weights, EncryptedVector):
        d = weights.to_dict()
        if per_chunk:
            meta["encrypted"] = {"format": "medsyft-he-vector/1", **{k: d[k] for k in (
                "key_id", "length", "scale", "bound", "weight_sum", "n_parts")}}
            arrays.update({f"c::{i}": np.frombuffer(c, np.uint8) for i, c in enumerate(weights.chunks)})
        else:
            meta["encrypted"] = {k: v for k, v in d.items() if k != "chunks"}
            arrays["packed::"] = d["chunks"]
    else:
        named = {"__flat__": weights} if isinstance(weights, np.ndarray) else (weights or {})
        arrays.update({f"w::{k}": v for k, v in named.items()})
    np.savez(path, __meta__=np.array(json.dumps(meta)), **arrays)


def test_older_call_ledger_results_read_as_the_same_value(fed: dict[str, Any], tmp_path: Path) -> None:
    encrypted = fed["parts"]["a"].vector
    weights = {"fc.bias": np.ones(2, np.float32), "fc.weight": np.zeros((2, 3), np.float32)}
    cases = {"packed": ({"weights": encrypted}, {}),
             "per-chunk": ({"weights": encrypted}, {"per_chunk": True}),
             "named": ({"weights": weights}, {}),
             "bare": ({"weights": PlainModel.from_weights(weights).vector}, {}),
             "share": ({"weights": None, "share": np.arange(3)}, {})}
    for name, (result, how) in cases.items():
        _old_ledger_result(tmp_path / f"{name}.npz", {"task": "train", "n_train": 7, **result}, **how)
        stored = codec.read_npz(tmp_path / f"{name}.npz")
        assert stored.fields["task"] == "train" and stored.fields["n_train"] == 7, name
    assert codec.from_npz(tmp_path / "packed.npz") == encrypted == codec.from_npz(tmp_path / "per-chunk.npz")
    assert codec.from_npz(tmp_path / "named.npz") == PlainModel.from_weights(weights)
    bare = codec.from_npz(tmp_path / "bare.npz")  # no layout was stored: the orchestrator supplies it
    assert PlainModel(bare, PlainModel.from_weights(weights).layout) == PlainModel.from_weights(weights)
    share = codec.read_npz(tmp_path / "share.npz")
    assert share.value is None and share.fields["share"].tolist() == [0, 1, 2]


def test_an_older_ledger_still_replays_the_bare_vector_it_stored(tmp_path: Path) -> None:
    log = CallLog(tmp_path, "job", max_calls=1)
    vector = np.arange(5, dtype=np.float32)
    _old_ledger_result(log.dir / "call-1.npz", {"task": "train", "n_train": 1, "weights": vector})
    replayed = log.run(1, lambda: pytest.fail("a stored call must not run again"))
    assert replayed["replayed"] and np.array_equal(replayed["weights"], vector)


def test_older_checkpoints_read_as_the_same_value(fed: dict[str, Any], tmp_path: Path) -> None:
    """``global-R.npz`` as the run directory wrote it before the codec, in its three forms."""
    encrypted, signed = fed["parts"]["a"].vector, fed["round"]
    meta = {k: v for k, v in encrypted.to_dict().items() if k != "chunks"}
    np.savez(tmp_path / "he.npz", __encrypted__=np.array(json.dumps(meta)),
             **{f"chunk_{i}": np.frombuffer(c, np.uint8) for i, c in enumerate(encrypted.chunks)})
    records, arrays = [], {}
    for i, part in enumerate(signed.parts):
        record = part.to_dict()
        arrays[f"part_{i}"] = record["vector"].pop("chunks")
        records.append(record)
    round_meta = {"call": signed.call, "parts": records,
                  "recoveries": [r.to_dict() for r in signed.recoveries]}
    np.savez(tmp_path / "signed.npz", __signed_round__=np.array(json.dumps(round_meta)), **arrays)
    weights = {"w": np.ones((2, 2), np.float32), "b": np.arange(2, dtype=np.int64)}
    np.savez(tmp_path / "plain.npz", **weights)
    assert codec.from_npz(tmp_path / "he.npz") == encrypted
    back = codec.from_npz(tmp_path / "signed.npz")
    assert isinstance(back, SignedRound) and back.call == 2 and back.recoveries == signed.recoveries
    assert [p.statement() for p in back.parts] == [p.statement() for p in signed.parts]
    assert codec.from_npz(tmp_path / "plain.npz") == PlainModel.from_weights(weights)


def test_older_wire_forms_read_as_the_same_value(fed: dict[str, Any]) -> None:
    encrypted = fed["parts"]["b"].vector
    names = ("key_id", "length", "scale", "bound", "weight_sum", "n_parts")
    fields = {k: getattr(encrypted, k) for k in names}
    listed = {"format": "medsyft-he-vector/1", **fields, "chunks": list(encrypted.chunks)}  # list of bytes
    assert codec.from_wire(listed) == encrypted
    weights = {"w": np.ones(3, np.float32)}  # named arrays, the plaintext form before one vector
    assert codec.from_wire(weights) == PlainModel.from_weights(weights)


# -- refused forms ----------------------------------------------------------------------------
def test_a_wrong_format_tag_is_refused_by_name() -> None:
    model = codec.to_wire(PlainModel.from_weights({"w": np.ones(2, np.float32)}))
    with pytest.raises(CodecError, match=r"unknown value format 'medsyft-model/9': expected one of .*"):
        codec.from_wire({**model, "format": "medsyft-model/9"})
    with pytest.raises(CodecError, match="unknown value format None"):
        codec.decode({"layout": []}, {})
    with pytest.raises(CodecError, match="exactly the keys format, layout and vector"):
        codec.from_wire({**model, "extra": 1})


def test_a_mismatched_layout_is_refused_naming_the_tensor() -> None:
    import torch

    from domains.runtime.weights import layout_of, load_plain

    net = torch.nn.Linear(3, 2)
    before = net.weight.detach().clone()
    model = PlainModel.from_weights({"bias": np.ones(2), "weight": np.ones((3, 2))})  # transposed
    with pytest.raises(CodecError, match=r"'weight' has shape \(3, 2\) but the approved model's has \(2, "):
        load_plain(net, model)
    assert torch.equal(net.weight, before)  # refused before anything was loaded
    renamed = PlainModel.from_weights({"bias": np.ones(2), "kernel": np.ones((2, 3))})
    with pytest.raises(CodecError, match=r"missing \['weight'\], unexpected \['kernel'\]"):
        load_plain(net, renamed)
    right = PlainModel(np.arange(8, dtype=np.float32), layout_of(net))
    load_plain(net, right)
    assert net.bias.detach().tolist() == [0.0, 1.0]


def test_truncated_arrays_and_files_are_refused(fed: dict[str, Any], tmp_path: Path) -> None:
    wire = codec.to_wire(PlainModel.from_weights({"w": np.ones((2, 2), np.float32)}))
    with pytest.raises(CodecError, match="vector has 3 values but the layout needs 4"):
        codec.from_wire({**wire, "vector": wire["vector"][:3]})
    meta, _ = codec.encode(fed["round"])
    with pytest.raises(CodecError, match="has no 'chunks' array: the file or payload is truncated"):
        codec.decode(meta, {})
    _, arrays = codec.encode(fed["round"])
    with pytest.raises(CodecError, match="the file is truncated"):
        codec.decode(meta, {"chunks": arrays["chunks"][:-10]})
    codec.to_npz(tmp_path / "m.npz", fed["round"])
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CodecError, match=r"cut.npz is damaged or not a medsyft file"):
        codec.read_npz(tmp_path / "cut.npz")
    np.save(tmp_path / "one.npy", np.ones(3))
    with pytest.raises(CodecError, match=r"holds one array, not a medsyft \.npz"):
        codec.read_npz(tmp_path / "one.npy")


def test_a_kind_is_registered_once() -> None:
    kind = Kind("plain-model", dict, "medsyft-model/1", encode=lambda v: ({}, {}), decode=lambda m, a: None,
                to_wire=dict, from_wire=dict, nbytes=len)
    with pytest.raises(ValueError, match="'plain-model' is already registered; pass force=True"):
        register_kind(kind)
    with pytest.raises(CodecError, match="no codec kind stores a set"):
        codec.encode({1})
    assert dataclasses.is_dataclass(kind)


def test_importing_the_codec_imports_neither_torch_nor_the_orchestrator() -> None:
    code = ("import sys, domains.shared.codec; "
            "print(sorted(m for m in ('torch', 'orchestrator', 'domains.runtime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.strip() == "[]"
