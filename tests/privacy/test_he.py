"""Encrypted FedAvg with real TenSEAL: key files, exactness against plain FedAvg, key ids, release masks."""

from __future__ import annotations

import dataclasses
import os
import pickle
import stat
from fractions import Fraction
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import tenseal as ts  # type: ignore[import-untyped, unused-ignore]
from hypothesis import given, settings
from hypothesis import strategies as st

from privacy.errors import HEError, KeyMismatch, NoSecretKey
from privacy.he import (
    MAX_PARTS,
    EncryptedVector,
    HEContext,
    fedavg_tolerance,
    fixed_point_scale,
    init_keys,
    load_context,
    load_context_bytes,
    release_mask,
    release_share,
    unmask_release,
)
from privacy.he_keys import PLAIN_MODULUS, POLY_MODULUS_DEGREE, PUBLIC_FILE, SECRET_FILE

T = PLAIN_MODULUS


class Keys(NamedTuple):
    hospital: HEContext
    orchestrator: HEContext
    secret_path: Path
    public_path: Path


def _keys(directory: Path) -> Keys:
    secret_path, public_path, key_id = init_keys(directory)
    keys = Keys(load_context(secret_path), load_context(public_path), secret_path, public_path)
    assert keys.hospital.key_id == keys.orchestrator.key_id == key_id
    return keys


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return _keys(tmp_path_factory.mktemp("he") / "keys")


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return _keys(tmp_path_factory.mktemp("he-other") / "keys")


def _fedavg(keys: Keys, vectors: list[np.ndarray], weights: list[float], bound: float) -> EncryptedVector:
    pairs = zip(vectors, weights, strict=True)
    parts = [keys.hospital.encrypt_weighted(v, weight=w, bound=bound) for v, w in pairs]
    return keys.orchestrator.aggregate(parts)


def _plain_fedavg(vectors: list[np.ndarray], weights: list[float], bound: float) -> np.ndarray:
    clamped = np.clip(np.stack(vectors).astype(np.float64), -bound, bound)
    return np.average(clamped, axis=0, weights=weights)


# --- key files -------------------------------------------------------------------------------------


def test_public_key_file_cannot_encrypt_decrypt_or_mask(keys: Keys) -> None:
    enc = keys.hospital.encrypt_weighted(np.ones(5), weight=1.0, bound=1.0)
    assert not keys.orchestrator.has_secret and keys.orchestrator.release_seed is None
    with pytest.raises(NoSecretKey, match="public file"):
        keys.orchestrator.decrypt_mean(enc)
    with pytest.raises(NoSecretKey):
        keys.orchestrator.decrypt_sum_residues(enc)
    with pytest.raises(NoSecretKey):
        keys.orchestrator.encrypt_weighted(np.ones(5), weight=1.0, bound=1.0)
    with pytest.raises(NoSecretKey):
        release_mask(keys.orchestrator, job_id="j", site_index=0, n_sites=2, length=5)


def test_public_key_file_holds_no_key_inside_tenseal(keys: Keys) -> None:
    context = load_context_bytes(keys.public_path.read_bytes())._tenseal
    assert not context.is_private() and not context.has_secret_key()
    assert not context.has_galois_keys() and not context.has_relin_keys()
    with pytest.raises(ValueError, match="not supported for symmetric"):
        context.public_key()  # symmetric scheme: no public key exists anywhere
    with pytest.raises(ValueError):
        ts.bfv_vector(context, [1, 2, 3])
    assert keys.hospital._tenseal.has_secret_key() and not keys.hospital._tenseal.has_relin_keys()
    assert keys.public_path.stat().st_size * 20 < keys.secret_path.stat().st_size


def test_init_keys_file_modes(keys: Keys) -> None:
    assert stat.S_IMODE(keys.secret_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.public_path.stat().st_mode) == 0o644
    assert stat.S_IMODE(keys.secret_path.parent.stat().st_mode) == 0o700
    assert {keys.secret_path.name, keys.public_path.name} == {SECRET_FILE, PUBLIC_FILE}


def test_init_keys_refuses_overwrite(tmp_path: Path) -> None:
    secret_path, _, first_id = init_keys(tmp_path)
    before = secret_path.read_bytes()
    with pytest.raises(HEError, match=r"already exists.*overwrite=True"):
        init_keys(tmp_path)
    assert secret_path.read_bytes() == before
    _, public_path, second_id = init_keys(tmp_path, overwrite=True)
    assert second_id != first_id and load_context(public_path).key_id == second_id


def test_repr_shows_no_secret(keys: Keys) -> None:
    assert keys.hospital.release_seed is not None
    shown = repr(keys.hospital)
    assert keys.hospital.release_seed.hex() not in shown and "_tenseal" not in shown


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such key file"),
        (b"PK\x03\x04 a zip file", "not a medsyft key file"),
        (b"MEDSYFT-HE-KEY\n\x00", "truncated header"),
        ("truncate", "checksum mismatch"),
        ("flip", "checksum mismatch"),
    ],
)
def test_load_context_refuses_bad_files(keys: Keys, tmp_path: Path, content: Any, message: str) -> None:
    path = tmp_path / "key.medsyftkey"
    data = keys.secret_path.read_bytes()
    if content == "truncate":
        content = data[:-100]
    elif content == "flip":
        content = data[:-50] + bytes([data[-50] ^ 1]) + data[-49:]
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(HEError, match=message) as info:
        load_context(path)
    assert str(path) in str(info.value)


def test_load_context_warns_on_readable_secret(keys: Keys, tmp_path: Path) -> None:
    path = tmp_path / SECRET_FILE
    path.write_bytes(keys.secret_path.read_bytes())
    os.chmod(path, 0o644)
    with pytest.warns(UserWarning, match="chmod 600"):
        load_context(path)


# --- encrypted FedAvg equals plain FedAvg -----------------------------------------------------------


def _vector(rng: np.random.Generator, length: int, bound: float) -> np.ndarray:
    """Mostly inside ±bound, some beyond it (clamped), some exactly at ±bound."""
    values = rng.uniform(-1.5 * bound, 1.5 * bound, length)
    special = rng.random(length)
    values[special < 0.05] = bound
    values[(special >= 0.05) & (special < 0.1)] = -bound
    return values.astype(np.float32)


@settings(max_examples=100, deadline=None)
@given(
    weights=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=5),
    subset=st.lists(st.booleans(), min_size=5, max_size=5),
    length=st.one_of(st.integers(1, 300), st.sampled_from([4095, 4096, 4097, 9000])),
    bound=st.one_of(st.sampled_from([0.5, 1.0, 4.0]), st.floats(0.01, 1000.0)),
    seed=st.integers(0, 2**32 - 1),
)
def test_encrypted_fedavg_equals_plain_fedavg(
    keys: Keys, weights: list[float], subset: list[bool], length: int, bound: float, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    normalised = [w / sum(weights) for w in weights]  # what a job does: all sites' weights sum to 1
    chosen = [i for i in range(len(weights)) if subset[i]] or [0]  # a round where some sites dropped out
    vectors = [_vector(rng, length, bound) for _ in chosen]
    used = [normalised[i] for i in chosen]
    enc = _fedavg(keys, vectors, used, bound)
    mean = keys.hospital.decrypt_mean(enc)
    assert mean.dtype == np.float32 and mean.shape == (length,)
    assert enc.n_parts == len(chosen) and enc.weight_sum == pytest.approx(sum(used))
    tolerance = fedavg_tolerance(n_parts=len(chosen), scale=enc.scale, weight_sum=enc.weight_sum, bound=bound)
    assert np.max(np.abs(mean - _plain_fedavg(vectors, used, bound))) <= tolerance


@pytest.mark.parametrize("length", [1, 4095, 4096, 4097])
def test_encrypted_fedavg_chunk_boundaries(keys: Keys, length: int) -> None:
    rng = np.random.default_rng(length)
    vectors = [_vector(rng, length, 4.0) for _ in range(3)]
    enc = _fedavg(keys, vectors, [0.2, 0.3, 0.5], 4.0)
    assert len(enc.chunks) == -(-length // POLY_MODULUS_DEGREE) and enc.length == length
    tolerance = fedavg_tolerance(n_parts=3, scale=enc.scale, weight_sum=enc.weight_sum, bound=4.0)
    error = keys.hospital.decrypt_mean(enc) - _plain_fedavg(vectors, [0.2, 0.3, 0.5], 4.0)
    assert np.max(np.abs(error)) <= tolerance


def test_aggregate_of_max_parts_at_the_bound_does_not_wrap(keys: Keys) -> None:
    """128 sites all at +bound or all at -bound: the largest sum the margin allows, and the most noise."""
    signs = np.where(np.arange(POLY_MODULUS_DEGREE) % 2 == 0, 1.0, -1.0)
    weight = 1 / MAX_PARTS
    parts = [keys.hospital.encrypt_weighted(signs * 4.0, weight=weight, bound=4.0) for _ in range(MAX_PARTS)]
    enc = keys.orchestrator.aggregate(parts)
    residues = keys.hospital.decrypt_sum_residues(enc)
    assert residues.dtype == np.int64 and residues.min() >= 0 and residues.max() < T
    assert np.all((residues > T // 2) == (signs < 0))  # the extremes stay on their side of half
    tolerance = fedavg_tolerance(n_parts=MAX_PARTS, scale=enc.scale, weight_sum=enc.weight_sum, bound=4.0)
    assert np.max(np.abs(keys.hospital.decrypt_mean(enc) - signs * 4.0)) <= tolerance
    with pytest.raises(HEError, match=f"at most {MAX_PARTS} parts"):
        keys.orchestrator.aggregate([*parts, parts[0]])


def test_aggregate_refuses_weights_above_one(keys: Keys) -> None:
    parts = [keys.hospital.encrypt_weighted(np.ones(3), weight=0.6, bound=1.0) for _ in range(2)]
    with pytest.raises(HEError, match="total ≤ 1"):
        keys.orchestrator.aggregate(parts)


def test_aggregate_refuses_mixed_bounds_and_nothing(keys: Keys) -> None:
    a = keys.hospital.encrypt_weighted(np.ones(3), weight=0.5, bound=1.0)
    b = keys.hospital.encrypt_weighted(np.ones(3), weight=0.5, bound=2.0)
    with pytest.raises(HEError, match="share length, scale and bound"):
        keys.orchestrator.aggregate([a, b])
    with pytest.raises(HEError, match="at least one"):
        keys.orchestrator.aggregate([])


@pytest.mark.parametrize(
    ("vector", "weight", "bound", "message"),
    [
        (np.ones(3), 0.0, 1.0, "weight"),
        (np.ones(3), 1.5, 1.0, "weight"),
        (np.ones(3), True, 1.0, "weight"),
        (np.ones(3), 0.5, 0.0, "bound"),
        (np.ones(3), 0.5, float("inf"), "bound"),
        (np.ones(3), 0.5, 1e9, "bound must be ≤"),
        (np.array([1.0, np.nan]), 0.5, 1.0, "1 values are NaN or infinite"),
        (np.array([]), 0.5, 1.0, "at least one value"),
        (["a", "b"], 0.5, 1.0, "numeric"),
    ],
)
def test_encrypt_weighted_refuses_bad_input(keys: Keys, vector: Any, weight: Any, bound: Any,
                                            message: str) -> None:
    with pytest.raises(HEError, match=message):
        keys.hospital.encrypt_weighted(vector, weight=weight, bound=bound)


def test_decrypt_refuses_exhausted_noise_budget(keys: Keys) -> None:
    """A ciphertext whose noise has grown too far (here: doubled 14 times) is refused, not misread."""
    enc = keys.hospital.encrypt_weighted(np.ones(8), weight=1.0, bound=1.0)
    vector = ts.bfv_vector_from(keys.hospital._tenseal, enc.chunks[0])
    for _ in range(14):
        vector = vector + vector
    with pytest.raises(HEError, match="noise budget is exhausted"):
        keys.hospital.decrypt_mean(dataclasses.replace(enc, chunks=(vector.serialize(),)))


# --- key ids ---------------------------------------------------------------------------------------


def test_ciphertext_from_another_key_is_refused(keys: Keys, other_keys: Keys) -> None:
    mine = keys.hospital.encrypt_weighted(np.ones(4), weight=0.5, bound=1.0)
    theirs = other_keys.hospital.encrypt_weighted(np.ones(4), weight=0.5, bound=1.0)
    expected = f"made under key {theirs.key_id[:8]} but this context holds key {mine.key_id[:8]}"
    with pytest.raises(KeyMismatch, match=expected):
        keys.orchestrator.aggregate([mine, theirs])
    with pytest.raises(KeyMismatch, match=expected):
        keys.orchestrator.aggregate([theirs])
    with pytest.raises(KeyMismatch, match=expected):
        keys.hospital.decrypt_mean(theirs)
    with pytest.raises(KeyMismatch):
        release_share(keys.hospital, theirs, job_id="j", site_index=0, n_sites=2)


# --- serialization ---------------------------------------------------------------------------------


def test_encrypted_vector_dict_round_trip(keys: Keys) -> None:
    enc = keys.hospital.encrypt_weighted(np.linspace(-1, 1, 5000), weight=0.25, bound=1.0)
    d = enc.to_dict()
    assert all(type(v) in (str, int, float, list) for k, v in d.items() if k != "chunks")
    assert d["chunks"].dtype == np.uint8 and d["chunks"].ndim == 1  # one packed array, not bytes
    assert d["chunk_sizes"] == [len(c) for c in enc.chunks] and sum(d["chunk_sizes"]) == enc.nbytes
    back = EncryptedVector.from_dict(pickle.loads(pickle.dumps(d)))
    assert back == enc
    assert np.array_equal(keys.hospital.decrypt_mean(back), keys.hospital.decrypt_mean(enc))
    assert EncryptedVector.from_dict({**d, "bound": 1}) == enc  # an int where a float was sent


def test_encrypted_vector_repr_is_cheap(keys: Keys) -> None:
    """PySyft renders repr() and str() of every value it wraps: the wire form must summarize."""
    d = keys.hospital.encrypt_weighted(np.linspace(-1, 1, 50_000), weight=0.25, bound=1.0).to_dict()
    assert len(repr(d)) < 2_000 and len(str(d)) < 2_000


def test_older_list_of_bytes_form_still_reads(keys: Keys) -> None:
    """Results stored by earlier versions (datasite ledgers, checkpoints) carry a list of bytes."""
    enc = keys.hospital.encrypt_weighted(np.linspace(-1, 1, 5000), weight=0.25, bound=1.0)
    fields = {k: getattr(enc, k) for k in ("key_id", "length", "scale", "bound", "weight_sum", "n_parts")}
    legacy = {"format": "medsyft-he-vector/1", **fields, "chunks": list(enc.chunks)}
    assert EncryptedVector.from_dict(legacy) == enc
    assert EncryptedVector.from_dict({**legacy, "chunk_sizes": [len(c) for c in enc.chunks]}) == enc
    with pytest.raises(HEError, match="chunk_sizes"):
        EncryptedVector.from_dict({**legacy, "chunk_sizes": [1, 2]})


def test_digest_names_the_ciphertext_not_its_wire_form(keys: Keys) -> None:
    enc = keys.hospital.encrypt_weighted(np.linspace(-1, 1, 5000), weight=0.25, bound=1.0)
    d = enc.to_dict()
    legacy = {**d, "format": "medsyft-he-vector/1", "chunks": list(enc.chunks)}
    assert EncryptedVector.from_dict(legacy).digest() == enc.digest()
    other = keys.hospital.encrypt_weighted(np.linspace(-1, 1, 5000), weight=0.25, bound=1.0)
    assert other.digest() != enc.digest()  # fresh randomness, another ciphertext


def _broken(d: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {k: v for k, v in {**d, **changes}.items() if v is not ...}


@pytest.mark.parametrize(
    "change",
    [
        {"length": "5000"}, {"length": True}, {"length": 0}, {"length": 10_000}, {"scale": 7},
        {"key_id": "not-hex"}, {"bound": "1.0"}, {"weight_sum": 2.0}, {"weight_sum": float("nan")},
        {"n_parts": MAX_PARTS + 1}, {"chunks": b"raw"}, {"chunks": ["text", "text"]}, {"chunks": []},
        {"chunks": np.zeros(10, np.float32)}, {"chunks": np.zeros((2, 5), np.uint8)},
        {"chunk_sizes": ...}, {"chunk_sizes": [1]}, {"chunk_sizes": "all"},
        {"format": "other"}, {"extra": 1}, {"scale": ...},
    ],
)
def test_encrypted_vector_from_dict_refuses_malformed(keys: Keys, change: dict[str, Any]) -> None:
    d = keys.hospital.encrypt_weighted(np.linspace(-1, 1, 5000), weight=0.25, bound=1.0).to_dict()
    with pytest.raises(HEError):
        EncryptedVector.from_dict(_broken(d, **change))


@pytest.mark.parametrize("garbage", [None, "vector", [1, 2], {}, {"format": "medsyft-he-vector/1"}])
def test_encrypted_vector_from_dict_refuses_garbage(garbage: Any) -> None:
    with pytest.raises(HEError):
        EncryptedVector.from_dict(garbage)


@pytest.mark.parametrize("junk", [b"x", b"xxxx", b"\0" * 64])
def test_garbage_ciphertext_is_refused_not_crashed(keys: Keys, junk: bytes) -> None:
    fresh = keys.hospital.encrypt_weighted(np.ones(3), weight=1.0, bound=1.0)
    enc = dataclasses.replace(fresh, chunks=(junk,))
    with pytest.raises(HEError, match="ciphertext chunk"):
        keys.orchestrator.aggregate([enc])
    with pytest.raises(HEError, match="ciphertext chunk"):
        keys.hospital.decrypt_mean(enc)


def test_wire_cost_per_parameter(keys: Keys) -> None:
    """Goal: at most 4 × the 4 bytes of float32 per parameter, everything included."""
    length = 100_000
    enc = keys.hospital.encrypt_weighted(np.random.default_rng(0).normal(size=length), weight=0.5, bound=4.0)
    per_param = len(pickle.dumps(enc.to_dict())) / length
    print(f"\nHE wire cost: {per_param:.2f} bytes/param = {per_param / 4:.2f} x float32 "
          f"(chunks alone {enc.nbytes / length:.2f})")
    assert per_param <= 4 * 4


# --- release masks ---------------------------------------------------------------------------------

Released = tuple[EncryptedVector, list[np.ndarray]]



@pytest.fixture(scope="module")
def released(keys: Keys) -> Released:
    rng = np.random.default_rng(7)
    enc = _fedavg(keys, [_vector(rng, 5000, 2.0) for _ in range(4)], [0.25] * 4, 2.0)
    shares = [release_share(keys.hospital, enc, job_id="job-1", site_index=i, n_sites=4) for i in range(4)]
    return enc, shares


def test_release_all_shares_unmask_to_the_mean(keys: Keys, released: Released) -> None:
    enc, shares = released
    mean = unmask_release(shares, plain_modulus=T, scale=enc.scale, weight_sum=enc.weight_sum, n_sites=4)
    assert np.array_equal(mean, keys.hospital.decrypt_mean(enc))


@pytest.mark.parametrize("missing", range(4))
def test_release_fewer_shares_stay_masked(keys: Keys, released: Released, missing: int) -> None:
    enc, shares = released
    partial = [s for i, s in enumerate(shares) if i != missing]
    guess = unmask_release(partial, plain_modulus=T, scale=enc.scale, weight_sum=enc.weight_sum, n_sites=3)
    wrong = np.abs(guess - keys.hospital.decrypt_mean(enc)) > 1e-3
    assert wrong.mean() > 0.99
    residues = sum(partial) % T
    assert 0.45 < np.mean(residues > T // 2) < 0.55  # uniform, not centred on the small true values
    with pytest.raises(HEError, match="needs all 4 shares"):
        unmask_release(partial, plain_modulus=T, scale=enc.scale, weight_sum=enc.weight_sum, n_sites=4)


def test_release_masks_cancel_and_are_deterministic(keys: Keys) -> None:
    def mask(job_id: str, index: int, n_sites: int = 3) -> np.ndarray:
        return release_mask(keys.hospital, job_id=job_id, site_index=index, n_sites=n_sites, length=1000)

    masks = [mask("job-a", i) for i in range(3)]
    assert all(m.dtype == np.int64 and m.min() >= 0 and m.max() < T for m in masks)
    assert np.all(sum(masks) % T == 0)
    assert np.array_equal(mask("job-a", 1), masks[1])
    assert np.mean(mask("job-b", 1) == masks[1]) < 0.01
    assert np.mean(masks[0] == masks[1]) < 0.01
    assert np.mean(mask("job-a", 0, n_sites=4) == masks[0]) < 0.01
    reloaded = load_context(keys.secret_path)
    again = release_mask(reloaded, job_id="job-a", site_index=2, n_sites=3, length=1000)
    assert np.array_equal(again, masks[2])


@pytest.mark.parametrize(
    "kwargs",
    [{"site_index": 3, "n_sites": 3}, {"site_index": -1}, {"n_sites": 0}, {"n_sites": MAX_PARTS + 1},
     {"job_id": ""}, {"length": 0}],
)
def test_release_mask_refuses_bad_arguments(keys: Keys, kwargs: dict[str, Any]) -> None:
    args: dict[str, Any] = {"job_id": "j", "site_index": 0, "n_sites": 3, "length": 10, **kwargs}
    with pytest.raises(HEError):
        release_mask(keys.hospital, **args)


# --- size of a real model --------------------------------------------------------------------------


@pytest.mark.slow
def test_encrypted_fedavg_resnet18_size(keys: Keys) -> None:
    """11.2 M float32 values (ResNet-18), two sites."""
    rng = np.random.default_rng(18)
    vectors = [rng.normal(0, 0.05, 11_200_000).astype(np.float32) for _ in range(2)]
    enc = _fedavg(keys, vectors, [0.3, 0.7], 4.0)
    mean = keys.hospital.decrypt_mean(enc)
    tolerance = fedavg_tolerance(n_parts=2, scale=enc.scale, weight_sum=enc.weight_sum, bound=4.0)
    assert np.max(np.abs(mean - _plain_fedavg(vectors, [0.3, 0.7], 4.0))) <= tolerance
    assert enc.nbytes / enc.length < 9


@pytest.mark.parametrize("bound", [0.1, 0.3, 1.0, 4.0, 7.0, 1000.0])
def test_fixed_point_scale_leaves_the_margin(bound: float) -> None:
    """S·bound ≤ half - margin exactly (no float rounding up), and S is the largest such integer."""
    room = Fraction((T - 1) // 2 - 64)
    scale = fixed_point_scale(bound=bound)
    assert scale * Fraction(bound) <= room < (scale + 1) * Fraction(bound)
