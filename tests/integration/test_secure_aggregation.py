"""Verifiable secure aggregation end to end: three real datasites, each with its own roster kit.

The key ceremony is the real one (``privacy.ceremony.init_federation``); every datasite is deployed
with its HE key and its own site kit; the orchestrator (this test process) holds only the public
HE file and roster.json. The lying orchestrator is played through the real approved function with
hand-built payloads (``orchestrator.transport.call_site``). Real Opacus, TenSEAL and signatures.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import (
    approve_all,
    deploy_site,
    free_ports,
    ledger_calls,
    ledger_states,
    run_and_crash_after_round_1,
    write_job_toml,
)

from domains.review.requests import RequestBook

pytestmark = pytest.mark.slow

COUNT = 600
NAMES = ("s1", "s2", "s3")
ROUNDS, BOUND = 2, 4.0


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from privacy.ceremony import init_federation
    from privacy.he_keys import SECRET_FILE
    from privacy.roster import SITE_KEYS_FILE

    os.environ["MEDSYFT_TORCH_THREADS"] = "1"
    root = tmp_path_factory.mktemp("secagg")
    fed = init_federation(root / "keys", list(NAMES))

    def deploy(name: str, port: int) -> Any:
        kit = fed.kits[name]
        return deploy_site(root / name, name, port, he_key=kit / SECRET_FILE, site_keys=kit / SITE_KEYS_FILE)

    with ThreadPoolExecutor(3) as pool:
        sites = list(pool.map(deploy, NAMES, free_ports(len(NAMES))))
    (root / "secrets").mkdir()
    for i, site in enumerate(sites, start=1):
        site.publish(name="chest", shard=f"{i}/3", partition="iid", seed=0, synthetic_count=COUNT,
                     epsilon_budget=100.0)
        (root / "secrets" / f"{site.config.name}.txt").write_text(site.add_scientist("ds@lab.example"))
    yield {"root": root, "sites": sites, "fed": fed}
    for site in sites:
        site.stop()


def new_job(fed: dict[str, Any], run: str, *, rounds: int = ROUNDS, min_sites: int = 2,
            job: tuple[str, ...] = (), dp: bool = True) -> Any:
    """A roster job over the federation's sites; *job* adds [job] lines (see
    test_server_optimizers_at_sites.py)."""
    from orchestrator import FederatedJob, load_config

    keys = fed["fed"]
    noise = ["noise_multiplier = 1.0", "eval_noise_multiplier = 5.0"] if dp else ["dp = false"]
    lines = ["[job]", 'dataset = "chest"', 'model = "small-cnn"', f"rounds = {rounds}", "local_epochs = 1",
             "batch_size = 32", "lr = 0.01", f"min_sites = {min_sites}", "round_timeout = 120",
             "approval_timeout = 60", f'run_dir = "{run}"', *job, "",
             "[privacy]", *noise,
             f'he_public_key = "{keys.public_path}"', f'roster = "{keys.roster_path}"']
    return FederatedJob(load_config(write_job_toml(fed["root"], run, fed["sites"], lines)))


def final_model(fed: dict[str, Any], site: str, job_id: str) -> Path:
    return fed["root"] / site / "jobs" / job_id / "final-model.npz"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(federation: dict[str, Any]) -> dict[str, Any]:
    """A normal run, crashed after round 1's checkpoint and resumed."""
    job = new_job(federation, "main")
    job.submit()
    first = job.state().submissions[0]
    review = RequestBook(federation["sites"][0].data_dir).review(first.request_id)
    approve_all(federation["sites"])
    job.wait_for_approval(timeout=60)
    run_and_crash_after_round_1(job)
    checkpoint = job.run_dir.load_global(1)
    resumed = new_job(federation, "main")
    return {"job": resumed, "result": resumed.run(progress=False), "review": review, "round1": checkpoint}


def test_a_verified_run_gives_every_site_the_same_final_model_and_the_release_equals_it(
        trained: dict[str, Any], federation: dict[str, Any]) -> None:
    from domains.runtime.weights import flatten
    from orchestrator.secure import SecureAggregation, SignedRound

    job, result, keys = trained["job"], trained["result"], federation["fed"]
    text = "\n".join(trained["review"].privacy.lines)
    assert f"verifiable secure aggregation: roster {keys.roster.fingerprint[:12]}" in text
    assert not trained["review"].privacy.warnings
    assert isinstance(trained["round1"], SignedRound) and trained["round1"].sites == NAMES
    spec = result.spec
    assert spec.he is not None and spec.he.roster == keys.roster.fingerprint
    assert (result.history["status"] == "ok").all() and list(result.history["round"]) == [1, 1, 1, 2, 2, 2]
    assert all(ledger_calls(federation["root"], n, spec.job_id) == [1, 2, 3] for n in NAMES)  # each once
    assert result.timing.loc[1, "download_MB"] > 2 * result.timing.loc[1, "update_MB"]  # all 3 parts
    digests = {sha256(final_model(federation, n, spec.job_id)) for n in NAMES}
    assert len(digests) == 1  # every site verified and decrypted the same sum
    job.request_release()
    approve_all(federation["sites"])
    released = job.fetch_release()
    local = np.load(final_model(federation, "s1", spec.job_id))
    assert np.allclose(flatten(released.weights)[0], local, atol=1e-6)
    signed = job.run_dir.load_global(ROUNDS)
    aggregation = SecureAggregation(job.strategy, job.he_context, roster=job.roster)
    verified = aggregation.verify(signed, job_id=spec.job_id, min_sites=2)
    record = json.loads((final_model(federation, "s2", spec.job_id).parent / "final.json").read_text())
    assert record["digest"] == verified.vector.digest() and record["transcript"] == verified.transcript


def test_a_hospital_with_the_he_key_reads_only_noise_from_one_sites_part(
        trained: dict[str, Any], federation: dict[str, Any]) -> None:
    """The collusion attack: a hospital decrypts another site's part from the orchestrator's checkpoint."""
    from privacy.he import load_context
    from privacy.secagg import aggregate_round, decrypt_round

    keys, spec = federation["fed"], trained["result"].spec
    hospital = load_context(keys.kits["s1"] / "hospital-secret.medsyftkey")
    signed = trained["job"].run_dir.load_global(ROUNDS)
    verified = aggregate_round(hospital, keys.roster, signed.parts, job_id=spec.job_id, call=ROUNDS)
    model = decrypt_round(hospital, verified)
    assert np.allclose(model, np.load(final_model(federation, "s1", spec.job_id)), atol=1e-6)
    assert np.max(np.abs(model)) <= BOUND
    for part in signed.parts:
        single = hospital.decrypt_mean(part.vector)  # without masks this was the site's own model
        assert np.mean(np.abs(single) > BOUND) > 0.5, part.site
        assert np.median(np.abs(single - model)) > 2.0, part.site


class Liar:
    """The orchestrator as an attacker: the real approved function, hand-built payloads."""

    def __init__(self, fed: dict[str, Any], job: Any) -> None:
        from orchestrator.transport import call_site

        self.fed, self.job, self.call_site = fed, job, call_site
        self.spec = job.state().spec
        self.functions = {s.site: s.function for s in job.state().submissions}

    def ask(self, name: str, payload: dict[str, Any]) -> Any:
        site = next(s for s in self.job.sites if s.name == name)
        return self.call_site(site, self.functions[name], site.asset("chest", "labels"), None, payload)

    def train(self, name: str, call: int, shown: list[dict[str, Any]], *, sites: tuple[str, ...] = NAMES,
              recoveries: list[dict[str, Any]] | None = None, **extra: Any) -> Any:
        payload = {"call": call, "weights": None, "weight": 1 / 3, "round_sites": list(sites),
                   "parts": shown, "recoveries": recoveries or [], "skipped": [], **extra}
        if call > self.spec.rounds:
            del payload["round_sites"], payload["weight"]
        return self.ask(name, payload)

    def part(self, name: str, call: int, shown: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
        outcome = self.train(name, call, shown, **kw)
        assert outcome.status == "ok", outcome.error
        return {**outcome.result["part"], "vector": outcome.result["weights"]}

    def recovery(self, name: str, call: int, survivors: list[str]) -> Any:
        return self.ask(name, {"recover": call, "survivors": survivors})

    def spent(self, name: str) -> float:
        from domains import budget
        from domains.site.datadir import DataDir

        return budget.status(DataDir(self.fed["root"] / name), "chest").spent_epsilon

    def refused(self, name: str, call: int, shown: list[dict[str, Any]], rule: str, site: str | None,
                **kw: Any) -> None:
        """The call is refused naming the rule and site, and nothing was computed or charged."""
        before = self.spent(name)
        outcome = self.train(name, call, shown, **kw)
        assert outcome.status == "error" and f"[rule {rule}, site {site}]" in outcome.error, outcome.error
        states = ledger_states(self.fed["root"], name, self.spec.job_id, call)
        assert states[-1] == "refused" and not {"done", "failed"} & set(states), states
        assert self.spent(name) == before


def _flip(part: dict[str, Any]) -> dict[str, Any]:
    chunks = np.array(part["vector"]["chunks"], copy=True)
    chunks[len(chunks) // 2] ^= 0xFF
    return {**part, "vector": {**part["vector"], "chunks": chunks}}


def _forged(liar: Liar, known: dict[str, Any]) -> Any:
    """The old attack: a known ciphertext plus a plaintext difference is an encryption of another model."""
    from privacy.he import EncryptedVector, quantize

    vector = EncryptedVector.from_dict(known["vector"])
    difference = quantize(np.full(vector.length, 1.0), weight=known["weight"], bound=BOUND)
    return liar.job.he_context.add_residues(vector, difference % 1032193)


def test_a_lying_orchestrator_is_refused_before_anything_is_computed(federation: dict[str, Any]) -> None:
    job = new_job(federation, "liar")
    job.submit()
    approve_all(federation["sites"])
    job.wait_for_approval(timeout=60)
    liar = Liar(federation, job)
    a1, b1, c1 = (liar.part(n, 1, []) for n in NAMES)
    honest = [a1, b1, c1]
    # the orchestrator claims s3 dropped: s1 and s2 reveal their masks with s3 for call 1
    below = liar.recovery("s1", 1, ["s1"])
    assert below.status == "error" and "below the minimum" in below.error
    r1 = [liar.recovery(n, 1, ["s1", "s2"]).result["recovery"] for n in ("s1", "s2")]
    liar.refused("s3", 2, [a1, b1], "self", "s3", recoveries=r1)  # s3's own part left out
    b2 = liar.part("s2", 2, honest)
    c2 = liar.part("s3", 2, honest, sites=("s2", "s3"))  # s3 is told another site set than s1, s2
    forged = _forged(liar, b1)
    cases = [
        ([a1, _flip(b1), c1], "ciphertext", "s2", {}),                            # a modified ciphertext
        ([a1, b1, {**b1, "site": "s3"}], "signature", "s3", {}),                  # s2's part relabelled
        ([a1, b2, c1], "call", "s2", {}),                                         # replayed from call 2
        ([a1, {**b1, "weight": 0.9}, c1], "signature", "s2", {}),                 # re-weighted
        ([a1, {**b1, "vector": forged.to_dict()}, c1], "ciphertext", "s2", {}),   # forged beside a signature
        ([], "malformed", None, {"weights": forged.to_dict()}),                   # a forged "sum" instead
        ([b1, c1], "missing", "s1", {}),                                          # its own part left out
        (honest, "minimum", "s1", {"sites": ("s1",)}),                            # < min_contributions
    ]
    for shown, rule, site, extra in cases:
        liar.refused("s1", 2, shown, rule, site, **extra)
    a2 = liar.part("s1", 2, honest)  # the honest call still runs: refusals consumed nothing
    r2 = [liar.recovery(n, 2, ["s1", "s2"]).result["recovery"] for n in ("s1", "s2")]
    liar.refused("s1", 3, honest, "call", "s1")                 # call 1's parts replayed at call 3
    liar.refused("s1", 3, [a2, b2, c2], "site-set", "s3")       # s3 was told another site set
    for name in ("s1", "s2"):
        final = liar.train(name, 3, [a2, b2], recoveries=r2)
        assert final.status == "ok", final.error
    spec = liar.spec
    assert sha256(final_model(federation, "s1", spec.job_id)) == sha256(final_model(federation, "s2",
                                                                                  spec.job_id))


def test_a_job_whose_sites_or_key_are_not_the_rosters_is_refused(federation: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    from orchestrator.errors import ConfigError
    from privacy.ceremony import init_federation
    from privacy.roster import canonical_json, new_roster

    keys = federation["fed"]
    two = new_roster(federation_id=keys.roster.federation_id, he_key_id=keys.roster.he_key_id,
                     sites=keys.roster.sites[:2])  # the same key ceremony, without s3
    (tmp_path / "two.json").write_text(canonical_json(two.to_dict()).decode())
    other = init_federation(tmp_path / "other", list(NAMES))  # another ceremony: another HE key
    for roster, needle in ((tmp_path / "two.json", "datasite 's3' is not on the federation's roster"),
                           (other.roster_path, "roster belongs to HE key")):
        job = new_job(federation, "offroster")
        job.config = replace(job.config, privacy=replace(job.config.privacy, roster=str(roster)))
        with pytest.raises(ConfigError, match=needle):
            job.make_spec()


def test_a_dropped_site_is_recovered_and_the_survivors_agree(federation: dict[str, Any]) -> None:
    from domains import Datasite
    from orchestrator.secure import SignedRound

    sites = federation["sites"]
    job = new_job(federation, "dropout")
    job.submit()
    approve_all(sites)
    job.wait_for_approval(timeout=60)
    down = sites[2]
    port = down.config.port
    stopped: list[bool] = []

    def stop_after_round_1(_: Any) -> None:
        if job.state().completed_round == 1 and not stopped:
            down.stop()
            stopped.append(True)

    try:
        result = job.run(progress=False, on_round=stop_after_round_1)
        history = result.history.set_index(["round", "site"])["status"]
        assert history[(2, "s3")] == "error" and history[(2, "s1")] == history[(2, "s2")] == "ok"
        assert result.timing.loc[1, "recoveries"] == 2 and result.timing.loc[1, "sites_ok"] == 2
        signed = job.run_dir.load_global(ROUNDS)
        assert isinstance(signed, SignedRound) and signed.sites == ("s1", "s2")
        assert {r.site for r in signed.recoveries} == {"s1", "s2"}
        assert all(r.dropped == ("s3",) for r in signed.recoveries)
        spec = result.spec
        assert sha256(final_model(federation, "s1", spec.job_id)) == sha256(final_model(federation, "s2",
                                                                                      spec.job_id))
        assert not final_model(federation, "s3", spec.job_id).exists()
        assert list(result.pooled().index) == [0, 1, 2]  # the survivors evaluated the final model
    finally:
        sites[2] = Datasite.deploy(down.data_dir.path, name=None, port=port)
