"""Verifiable, masked secure aggregation with real keys: exact sums, hidden parts, every refusal, dropouts."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privacy.ceremony import init_federation
from privacy.errors import AggregationRefused, RecoveryRefused, SecAggError
from privacy.he import HEContext, fedavg_tolerance, load_context, quantize
from privacy.he_keys import MAX_PARTS, PLAIN_MODULUS
from privacy.roster import SITE_KEYS_FILE, Roster, SiteKit, load_site_kit
from privacy.secagg import aggregate_round, decrypt_round, make_part, recover_masks
from privacy.secagg_masks import call_seed, expand_mask, site_mask
from privacy.secagg_messages import MaskRecovery, SignedPart

T = PLAIN_MODULUS
# Roster order is not alphabetical: the mask signs follow the roster, the site sets are sorted.
SITES = ["st-mary", "general", "north", "east", "st-john"]
BOUND = 4.0
JOB = "job-7f3a"


class Fed(NamedTuple):
    roster: Roster
    kits: dict[str, SiteKit]
    hospital: HEContext
    orchestrator: HEContext


def _federation(out: Path, sites: list[str]) -> Fed:
    fed = init_federation(out, sites)
    kits = {name: load_site_kit(folder / SITE_KEYS_FILE) for name, folder in fed.kits.items()}
    return Fed(fed.roster, kits, load_context(fed.secret_path), load_context(fed.public_path))


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Fed:
    return _federation(tmp_path_factory.mktemp("secagg") / "keys", SITES)


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Fed:
    """Another federation that reuses two of the names: its keys are not on ``fed``'s roster."""
    return _federation(tmp_path_factory.mktemp("secagg-other") / "keys", ["general", "intruder"])


def _parts(fed: Fed, updates: dict[str, np.ndarray], weights: dict[str, float], *, call: int = 1,
           job_id: str = JOB, round_sites: list[str] | None = None, basis: str = "") -> list[SignedPart]:
    sites = round_sites or sorted(updates)
    return [make_part(fed.kits[n], fed.hospital, updates[n], weight=weights[n], bound=BOUND, job_id=job_id,
                      call=call, round_sites=sites, basis=basis) for n in sorted(updates)]


def _plain_sum(updates: dict[str, np.ndarray], weights: dict[str, float], names: list[str]) -> np.ndarray:
    """Σ q_i as residues mod t: what the unmasked encrypted FedAvg decrypts to."""
    total = sum(quantize(updates[n], weight=weights[n], bound=BOUND) for n in names)
    return np.asarray(total) % T


@pytest.fixture(scope="module")
def honest(fed: Fed) -> tuple[dict[str, np.ndarray], dict[str, float], list[SignedPart]]:
    """One honest round of four sites (st-john sits it out), each weight 1/4, 300 values."""
    rng = np.random.default_rng(3)
    names = ["east", "general", "north", "st-mary"]
    updates = {n: rng.uniform(-5, 5, 300) for n in names}
    weights = dict.fromkeys(names, 0.25)
    return updates, weights, _parts(fed, updates, weights)


# --- the sum of masked parts is the plain sum --------------------------------------------------------


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    chosen=st.sets(st.sampled_from(SITES), min_size=2),
    raw_weights=st.lists(st.floats(0.05, 1.0), min_size=len(SITES), max_size=len(SITES)),
    length=st.one_of(st.integers(1, 200), st.sampled_from([4095, 4096, 4097])),
    seed=st.integers(0, 2**32 - 1),
    call=st.integers(0, 10**6),
)
def test_masked_parts_sum_to_the_plain_sum(fed: Fed, chosen: set[str], raw_weights: list[float], length: int,
                                           seed: int, call: int) -> None:
    rng = np.random.default_rng(seed)
    weights = {n: w / sum(raw_weights) for n, w in zip(SITES, raw_weights, strict=True)}
    updates = {n: rng.uniform(-1.5 * BOUND, 1.5 * BOUND, length) for n in chosen}
    parts = _parts(fed, updates, {n: weights[n] for n in chosen}, call=call)
    verified = aggregate_round(fed.orchestrator, fed.roster, parts, job_id=JOB, call=call)
    names = sorted(chosen)
    residues = fed.hospital.decrypt_sum_residues(verified.vector)
    assert np.array_equal(residues, _plain_sum(updates, weights, names))
    mean = decrypt_round(fed.hospital, verified)
    used = [weights[n] for n in names]
    plain = np.average(np.clip(np.stack([updates[n] for n in names]), -BOUND, BOUND), axis=0, weights=used)
    enc = verified.vector
    tolerance = fedavg_tolerance(n_parts=len(names), scale=enc.scale, weight_sum=enc.weight_sum, bound=BOUND)
    assert enc.n_parts == len(names) and np.max(np.abs(mean - plain)) <= tolerance
    assert verified.survivors == verified.round_sites == tuple(names) and verified.dropped == ()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    round_set=st.sets(st.sampled_from(SITES), min_size=3),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
)
def test_dropout_recovery_yields_the_survivors_sum(fed: Fed, round_set: set[str], data: st.DataObject,
                                                   seed: int) -> None:
    names = sorted(round_set)
    dropped = data.draw(st.sets(st.sampled_from(names), min_size=1, max_size=len(names) - 2))
    survivors = [n for n in names if n not in dropped]
    rng = np.random.default_rng(seed)
    updates = {n: rng.uniform(-BOUND, BOUND, 500) for n in names}
    weights = dict.fromkeys(names, 1 / len(names))
    parts = {p.site: p for p in _parts(fed, updates, weights, call=4)}
    recoveries = [recover_masks(fed.kits[n], parts[n], survivors=survivors) for n in survivors]
    verified = aggregate_round(fed.orchestrator, fed.roster, [parts[n] for n in survivors], job_id=JOB,
                               call=4, recoveries=recoveries)  # the public context can do it all
    assert verified.dropped == tuple(sorted(dropped)) and verified.survivors == tuple(survivors)
    assert np.array_equal(fed.hospital.decrypt_sum_residues(verified.vector),
                          _plain_sum(updates, weights, survivors))
    plain = np.mean(np.stack([updates[n] for n in survivors]), axis=0)
    enc = verified.vector
    tolerance = fedavg_tolerance(n_parts=len(survivors), scale=enc.scale, weight_sum=enc.weight_sum,
                                 bound=BOUND)
    assert np.max(np.abs(decrypt_round(fed.hospital, verified) - plain)) <= tolerance


def test_masks_cancel_over_the_round_and_both_sides_derive_the_same_seed(fed: Fed) -> None:
    names = sorted(SITES)
    masks = [site_mask(fed.kits[n], job_id=JOB, call=2, round_sites=names, length=1000) for n in names]
    assert all(m.min() >= 0 and m.max() < T for m in masks) and np.all(sum(masks) % T == 0)
    a, b = fed.kits["st-mary"], fed.kits["east"]
    assert call_seed(a, "east", job_id=JOB, call=2) == call_seed(b, "st-mary", job_id=JOB, call=2)
    others = {call_seed(a, "east", job_id=JOB, call=3), call_seed(a, "east", job_id="job-2", call=2),
              call_seed(a, "north", job_id=JOB, call=2)}
    assert call_seed(a, "east", job_id=JOB, call=2) not in others and len(others) == 3


def test_expanded_masks_are_uniform_in_z_t() -> None:
    values = expand_mask(bytes(32), 400_000)
    assert values.dtype == np.int64 and values.min() >= 0 and values.max() < T
    assert values.max() > T - 100  # the top of Z_t is reached: no truncation to 2^19 or similar
    counts = np.bincount(values * 20 // T, minlength=20)
    expected = values.size / 20
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 60  # 19 degrees of freedom: p < 1e-6 for a uniform source
    assert np.array_equal(expand_mask(bytes(32), 1000), values[:1000])  # prefix-stable stream
    assert np.mean(expand_mask(bytes(31) + b"\1", 1000) == values[:1000]) < 0.01


def test_a_zero_update_is_masked_and_one_part_alone_decrypts_to_noise(fed: Fed) -> None:
    names = ["general", "st-mary"]
    zeros = {n: np.zeros(4096) for n in names}
    parts = _parts(fed, zeros, dict.fromkeys(names, 0.5))
    for part in parts:
        residues = fed.hospital.decrypt_sum_residues(part.vector)  # a colluding hospital decrypts it
        assert np.mean(residues == 0) < 0.01
        assert 0.45 < np.mean(residues > T // 2) < 0.55
        assert np.median(np.abs(fed.hospital.decrypt_mean(part.vector))) > 1.0  # the true update is 0
    verified = aggregate_round(fed.orchestrator, fed.roster, parts, job_id=JOB, call=1)
    assert np.all(decrypt_round(fed.hospital, verified) == 0)


# --- every refusal raises before anything is added or decrypted ---------------------------------------


@pytest.fixture
def no_he_work(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records any addition or decryption, so a refusal can be shown to come before them."""
    calls: list[str] = []
    for name in ("aggregate", "add_residues", "_decrypt_signed"):
        original = getattr(HEContext, name)

        def spy(self: HEContext, *args: Any, _name: str = name, _orig: Any = original, **kw: Any) -> Any:
            calls.append(_name)
            return _orig(self, *args, **kw)

        monkeypatch.setattr(HEContext, name, spy)
    yield calls


def _refused(fed: Fed, parts: list[SignedPart], calls: list[str], *, expected: tuple[str, str | None],
             **kwargs: Any) -> AggregationRefused:
    """Asserts the refusal's (rule, site) and that no HE work happened; kwargs go to aggregate_round."""
    options = {"job_id": JOB, "call": 1, **kwargs}
    with pytest.raises(AggregationRefused) as info:
        aggregate_round(fed.hospital, fed.roster, parts, **options)
    assert (info.value.rule, info.value.site) == expected, str(info.value)
    assert calls == []  # nothing added, nothing decrypted
    return info.value


def test_forged_signature_is_refused(fed: Fed, honest: Any, no_he_work: list[str]) -> None:
    _, _, parts = honest
    forged = dataclasses.replace(parts[1], signature=bytes(64))
    _refused(fed, [parts[0], forged, *parts[2:]], no_he_work, expected=("signature", parts[1].site))
    by_other = dataclasses.replace(parts[1], signature=fed.kits["st-john"].sign(parts[1].statement()))
    error = _refused(fed, [parts[0], by_other, *parts[2:]], no_he_work, expected=("signature", parts[1].site))
    assert "does not verify" in str(error)


def test_forged_ciphertext_is_refused(fed: Fed, honest: Any, no_he_work: list[str]) -> None:
    """The known attack: build a ciphertext of another model and put it beside a site's signature."""
    _, _, parts = honest
    evil = fed.hospital.encrypt_weighted(np.full(300, 3.9), weight=parts[0].weight, bound=BOUND)
    swapped = dataclasses.replace(parts[0], vector=evil)
    _refused(fed, [swapped, *parts[1:]], no_he_work, expected=("ciphertext", parts[0].site))
    relabelled_digest = dataclasses.replace(swapped, ciphertext=evil.digest())
    _refused(fed, [relabelled_digest, *parts[1:]], no_he_work, expected=("signature", parts[0].site))


def test_relabelled_or_reweighted_part_is_refused(fed: Fed, honest: Any, no_he_work: list[str]) -> None:
    _, _, parts = honest  # east, general, north, st-mary
    relabelled = dataclasses.replace(parts[0], site="st-john")  # east's part passed off as st-john's
    _refused(fed, [relabelled, *parts[1:]], no_he_work, expected=("signature", "st-john"))
    heavier = dataclasses.replace(parts[0], weight=0.5, vector=dataclasses.replace(parts[0].vector,
                                                                                   weight_sum=0.5))
    _refused(fed, [heavier, *parts[1:]], no_he_work, expected=("signature", "east"))


def test_replayed_part_from_another_call_or_job_is_refused(fed: Fed, honest: Any,
                                                           no_he_work: list[str]) -> None:
    updates, weights, parts = honest
    old_call = _parts(fed, {"east": updates["east"]}, weights, call=0, round_sites=sorted(updates))[0]
    error = _refused(fed, [old_call, *parts[1:]], no_he_work, expected=("call", "east"))
    assert "replayed" in str(error)
    other_job = _parts(fed, {"east": updates["east"]}, weights, job_id="job-other",
                       round_sites=sorted(updates))
    _refused(fed, [other_job[0], *parts[1:]], no_he_work, expected=("job", "east"))


def test_off_roster_key_and_site_are_refused(fed: Fed, other: Fed, honest: Any,
                                             no_he_work: list[str]) -> None:
    updates, _, parts = honest
    intruder = make_part(other.kits["intruder"], other.hospital, updates["east"], weight=0.25, bound=BOUND,
                         job_id=JOB, call=1, round_sites=["general", "intruder"])
    _refused(fed, [*parts, intruder], no_he_work, expected=("off-roster", "intruder"))
    namesake = make_part(other.kits["general"], other.hospital, updates["general"], weight=0.25, bound=BOUND,
                         job_id=JOB, call=1, round_sites=["general", "intruder"])  # same name, other keys
    _refused(fed, [parts[0], namesake, *parts[2:]], no_he_work, expected=("signature", "general"))


def test_duplicate_extra_and_mismatched_site_sets_are_refused(fed: Fed, honest: Any,
                                                              no_he_work: list[str]) -> None:
    updates, weights, parts = honest
    _refused(fed, [*parts, parts[2]], no_he_work, expected=("duplicate", parts[2].site))
    five = sorted(SITES)
    outsider = make_part(fed.kits["st-john"], fed.hospital, updates["east"], weight=0.1, bound=BOUND,
                         job_id=JOB, call=1, round_sites=five)
    _refused(fed, [*parts, outsider], no_he_work, expected=("site-set", "st-john"))
    # a part signed for the honest set by a site outside it (only a lying site could make one)
    unsigned = dataclasses.replace(outsider, round_sites=parts[0].round_sites)
    extra = dataclasses.replace(unsigned, signature=fed.kits["st-john"].sign(unsigned.statement()))
    _refused(fed, [*parts, extra], no_he_work, expected=("extra", "st-john"))
    # the orchestrator told east a three-site set and the others the four-site set
    three = _parts(fed, {"east": updates["east"]}, weights, round_sites=["east", "general", "north"])
    _refused(fed, [three[0], *parts[1:]], no_he_work, expected=("site-set", "general"))


def test_missing_part_weights_minimum_basis_and_self_are_refused(fed: Fed, honest: Any,
                                                                 no_he_work: list[str]) -> None:
    updates, weights, parts = honest
    _refused(fed, parts[:3], no_he_work, expected=("missing", "st-mary"))
    _refused(fed, parts, no_he_work, expected=("minimum", None), min_sites=5)
    with pytest.raises(SecAggError, match="min_sites"):
        aggregate_round(fed.hospital, fed.roster, parts, job_id=JOB, call=1, min_sites=1)
    heavy = _parts(fed, {n: updates[n] for n in ("east", "general")}, dict.fromkeys(updates, 0.6))
    _refused(fed, heavy, no_he_work, expected=("weights", None))
    _refused(fed, parts, no_he_work, expected=("basis", "east"), basis="a" * 64)
    longer = _parts(fed, {"north": np.ones(301)}, weights, round_sites=sorted(updates))
    _refused(fed, [*parts[:2], longer[0], parts[3]], no_he_work, expected=("metadata", "north"))
    assert no_he_work == []
    names = ["east", "general", "north"]
    without_me = {p.site: p for p in _parts(fed, {n: updates[n] for n in names}, weights)}
    recoveries = [recover_masks(fed.kits[n], without_me[n], survivors=["east", "general"])
                  for n in ("east", "general")]
    _refused(fed, [without_me["east"], without_me["general"]], no_he_work, expected=("self", "north"),
             recoveries=recoveries, site="north")


def test_a_one_site_round_cannot_be_made(fed: Fed) -> None:
    with pytest.raises(SecAggError, match="≥ 2 distinct sites"):
        make_part(fed.kits["east"], fed.hospital, np.ones(3), weight=1.0, bound=BOUND, job_id=JOB, call=1,
                  round_sites=["east"])


def test_part_with_a_bad_basis_cannot_be_made(fed: Fed) -> None:
    with pytest.raises(SecAggError, match="basis must be"):
        make_part(fed.kits["east"], fed.hospital, np.ones(3), weight=0.5, bound=BOUND, job_id=JOB, call=1,
                  round_sites=["east", "general"], basis="round-1")


def test_part_under_another_he_key_cannot_be_made(fed: Fed, other: Fed) -> None:
    with pytest.raises(SecAggError, match="not the roster's"):
        make_part(fed.kits["east"], other.hospital, np.ones(3), weight=0.5, bound=BOUND, job_id=JOB, call=1,
                  round_sites=["east", "general"])


# --- dropouts: what survivors reveal, and when they refuse -------------------------------------------


@pytest.fixture(scope="module")
def dropped_round(fed: Fed) -> tuple[dict[str, SignedPart], list[MaskRecovery]]:
    """Round {east, general, north, st-mary}, north dropped."""
    rng = np.random.default_rng(11)
    names = ["east", "general", "north", "st-mary"]
    parts = {p.site: p for p in _parts(fed, {n: rng.uniform(-1, 1, 200) for n in names},
                                       dict.fromkeys(names, 0.25), call=9)}
    survivors = ["east", "general", "st-mary"]
    return parts, [recover_masks(fed.kits[n], parts[n], survivors=survivors) for n in survivors]


def test_survivor_refuses_recovery_for_a_site_whose_part_it_saw(fed: Fed, dropped_round: Any) -> None:
    parts, _ = dropped_round
    with pytest.raises(RecoveryRefused, match="'north' did not drop"):
        recover_masks(fed.kits["east"], parts["east"], survivors=["east", "general", "st-mary"],
                      seen_parts=list(parts.values()))


def test_survivor_reveals_masks_for_one_survivor_set_per_call(fed: Fed, dropped_round: Any) -> None:
    parts, recoveries = dropped_round
    mine = recoveries[0]
    again = recover_masks(fed.kits["east"], parts["east"], survivors=list(mine.survivors), issued=[mine])
    assert again == mine
    with pytest.raises(RecoveryRefused, match="one survivor set only"):
        recover_masks(fed.kits["east"], parts["east"], survivors=["east", "general"], issued=[mine])
    with pytest.raises(RecoveryRefused, match="below the minimum"):
        recover_masks(fed.kits["east"], parts["east"], survivors=["east"])
    with pytest.raises(RecoveryRefused, match="own signed part"):
        recover_masks(fed.kits["general"], parts["east"], survivors=list(mine.survivors))
    assert set(mine.seeds) == {"north"} and all(len(s) == 32 for s in mine.seeds.values())


def test_bad_recoveries_are_refused(fed: Fed, dropped_round: Any, no_he_work: list[str]) -> None:
    parts, recoveries = dropped_round
    survivors = [parts[n] for n in ("east", "general", "st-mary")]

    def refused(recs: list[MaskRecovery], rule: str, site: str) -> None:
        _refused(fed, survivors, no_he_work, expected=(rule, site), call=9, recoveries=recs)

    refused(recoveries[:2], "recovery", "st-mary")
    refused([*recoveries, recoveries[0]], "duplicate", "east")
    tampered = dataclasses.replace(recoveries[1], seeds={"north": bytes(32)})
    refused([recoveries[0], tampered, recoveries[2]], "signature", "general")
    with pytest.raises(AggregationRefused, match="no site of the call is missing"):
        aggregate_round(fed.hospital, fed.roster, list(parts.values()), job_id=JOB, call=9,
                        recoveries=recoveries)


def test_a_lying_survivors_seeds_make_the_sum_unusable(fed: Fed, dropped_round: Any) -> None:
    parts, recoveries = dropped_round
    liar = dataclasses.replace(recoveries[2], seeds={"north": bytes(32)})
    liar = dataclasses.replace(liar, signature=fed.kits["st-mary"].sign(liar.statement()))
    verified = aggregate_round(fed.hospital, fed.roster, [parts[n] for n in ("east", "general", "st-mary")],
                               job_id=JOB, call=9, recoveries=[*recoveries[:2], liar])
    with pytest.raises(AggregationRefused, match="decrypts outside") as info:
        decrypt_round(fed.hospital, verified)
    assert info.value.rule == "range"


# --- wire form and transcript ------------------------------------------------------------------------


def test_parts_and_recoveries_survive_the_wire(fed: Fed, dropped_round: Any) -> None:
    parts, recoveries = dropped_round
    sent = [SignedPart.from_dict(pickle.loads(pickle.dumps(parts[n].to_dict())))
            for n in ("st-mary", "east", "general")]
    recs = [MaskRecovery.from_dict(pickle.loads(pickle.dumps(r.to_dict()))) for r in recoveries]
    assert sent[1] == parts["east"] and recs == recoveries
    direct = aggregate_round(fed.hospital, fed.roster, [parts[n] for n in ("east", "general", "st-mary")],
                             job_id=JOB, call=9, recoveries=recoveries)
    wired = aggregate_round(fed.hospital, fed.roster, sent, job_id=JOB, call=9, recoveries=recs[::-1])
    assert wired.transcript == direct.transcript  # the same round whatever the order it arrived in
    assert np.array_equal(decrypt_round(fed.hospital, wired), decrypt_round(fed.hospital, direct))
    assert SignedPart.from_dict({**parts["east"].to_dict(), "weight": 1}).weight == 1.0


@pytest.mark.parametrize(
    "change",
    [{"format": "x"}, {"site": ""}, {"call": -1}, {"call": True}, {"signature": "00"}, {"roster": "x"},
     {"basis": "nope"}, {"weight": "0.25"}, {"round_sites": "east"}, {"vector": {}}],
)
def test_malformed_parts_are_refused(honest: Any, change: dict[str, Any]) -> None:
    _, _, parts = honest
    with pytest.raises(AggregationRefused) as info:
        SignedPart.from_dict({**parts[0].to_dict(), **change})
    assert info.value.rule == "malformed"


def test_transcript_names_the_round(fed: Fed, honest: Any) -> None:
    updates, weights, parts = honest
    first = aggregate_round(fed.orchestrator, fed.roster, parts, job_id=JOB, call=1)
    assert aggregate_round(fed.orchestrator, fed.roster, parts[::-1], job_id=JOB, call=1).transcript == \
        first.transcript
    next_call = _parts(fed, updates, weights, call=2, basis=first.transcript)
    verified = aggregate_round(fed.orchestrator, fed.roster, next_call, job_id=JOB, call=2,
                               basis=first.transcript, site="east")
    assert verified.transcript != first.transcript


def test_masked_sum_of_max_parts_at_the_bound_does_not_wrap(tmp_path: Path) -> None:
    """128 sites (the most a sum holds) all at ±bound: masks must neither wrap the sum nor exhaust noise."""
    names = [f"site-{i:03d}" for i in range(MAX_PARTS)]
    big = _federation(tmp_path / "keys", names)
    signs = np.where(np.arange(4096) % 2 == 0, 1.0, -1.0)
    parts = [make_part(big.kits[n], big.hospital, signs * BOUND, weight=1 / MAX_PARTS, bound=BOUND,
                       job_id=JOB, call=1, round_sites=names) for n in names]
    verified = aggregate_round(big.orchestrator, big.roster, parts, job_id=JOB, call=1)
    expected = _plain_sum(dict.fromkeys(names, signs * BOUND), dict.fromkeys(names, 1 / MAX_PARTS), names)
    assert np.array_equal(big.hospital.decrypt_sum_residues(verified.vector), expected)
    enc = verified.vector
    tolerance = fedavg_tolerance(n_parts=MAX_PARTS, scale=enc.scale, weight_sum=enc.weight_sum, bound=BOUND)
    assert np.max(np.abs(decrypt_round(big.hospital, verified) - signs * BOUND)) <= tolerance
