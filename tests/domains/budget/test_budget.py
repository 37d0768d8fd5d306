"""The ε ledger never lets a dataset's spending pass its budget, across restarts and replays."""

from __future__ import annotations

import json
import math
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from domains import budget
from domains.errors import BudgetError, PrivacyBudgetExceeded
from domains.site.datadir import DataDir
from privacy.accounting import epsilon, eval_entry, training_entry

N = 800
DELTA = 1e-5
EVAL = eval_entry(eval_noise_multiplier=20.0)
REPO = Path(__file__).resolve().parents[3]


def _plan(rounds: int = 8, *, sigma: float = 1.0, epochs: int = 2) -> dict[int, list]:
    train = training_entry(noise_multiplier=sigma, n_samples=N, batch_size=64, epochs=epochs)
    return budget.round_plan(rounds=rounds, training=train, evaluation=EVAL)


def _flat(plan: dict[int, list]) -> list:
    return [e for call in sorted(plan) for e in plan[call]]


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    d = DataDir(tmp_path / "site")
    budget.set_budget(d, "chest", n_samples=N, epsilon_budget=10.0, delta=DELTA)
    return d


def test_reserve_refuses_a_job_that_would_pass_the_budget(data_dir: DataDir) -> None:
    first = budget.reserve(data_dir, "chest", job_id="a", plan=_plan(), description="8 rounds")
    assert first["epsilon_after"] == pytest.approx(epsilon(_flat(_plan()), delta=DELTA))
    refusal = r"approving job b would bring dataset 'chest' to ε=12\.1"
    with pytest.raises(PrivacyBudgetExceeded, match=refusal):
        budget.reserve(data_dir, "chest", job_id="b", plan=_plan())
    assert [j.job_id for j in budget.status(data_dir, "chest").jobs] == ["a"]


def test_reserve_same_job_twice_reserves_once(data_dir: DataDir) -> None:
    budget.reserve(data_dir, "chest", job_id="a", plan=_plan())
    again = budget.reserve(data_dir, "chest", job_id="a", plan=_plan())
    assert again["epsilon_after"] == pytest.approx(budget.status(data_dir, "chest").reserved_epsilon)
    with pytest.raises(BudgetError, match="different reservation"):
        budget.reserve(data_dir, "chest", job_id="a", plan=_plan(2))


def test_reserve_on_a_dataset_without_budget_is_refused(data_dir: DataDir) -> None:
    with pytest.raises(BudgetError, match="'other' has no ε budget"):
        budget.reserve(data_dir, "other", job_id="a", plan=_plan())


def test_charge_replayed_call_is_free(data_dir: DataDir) -> None:
    plan = _plan()
    budget.reserve(data_dir, "chest", job_id="a", plan=plan)
    assert budget.charge(data_dir, "chest", job_id="a", call=1, entries=plan[1]) is True
    spent = budget.status(data_dir, "chest").spent_epsilon
    assert budget.charge(data_dir, "chest", job_id="a", call=1, entries=plan[1]) is False
    assert budget.status(data_dir, "chest").spent_epsilon == spent == pytest.approx(
        epsilon(plan[1], delta=DELTA))


def test_charge_without_reservation_is_refused(data_dir: DataDir) -> None:
    plan = _plan(2)
    with pytest.raises(PrivacyBudgetExceeded, match="holds no ε reservation"):
        budget.charge(data_dir, "chest", job_id="ghost", call=1, entries=plan[1])
    budget.reserve(data_dir, "chest", job_id="a", plan=plan)
    with pytest.raises(PrivacyBudgetExceeded, match="call 4 of job a"):
        budget.charge(data_dir, "chest", job_id="a", call=4, entries=plan[1])
    budget.cancel_reservation(data_dir, "chest", "a")
    with pytest.raises(PrivacyBudgetExceeded, match="holds no ε reservation"):
        budget.charge(data_dir, "chest", job_id="a", call=1, entries=plan[1])
    assert budget.status(data_dir, "chest").spent_epsilon == 0.0


def test_charge_that_spends_more_than_planned_past_the_budget_is_refused(data_dir: DataDir) -> None:
    plan = _plan(8)
    budget.reserve(data_dir, "chest", job_id="a", plan=plan)
    greedy = [EVAL, training_entry(noise_multiplier=1.0, n_samples=N, batch_size=64, epochs=20)]
    with pytest.raises(PrivacyBudgetExceeded, match="running call 1 of job a"):
        budget.charge(data_dir, "chest", job_id="a", call=1, entries=greedy)
    assert budget.status(data_dir, "chest").spent_epsilon == 0.0


def test_release_frees_outstanding_calls_but_not_spent_ones(data_dir: DataDir) -> None:
    plan = _plan()
    budget.reserve(data_dir, "chest", job_id="a", plan=plan)
    budget.charge(data_dir, "chest", job_id="a", call=1, entries=plan[1])
    assert budget.cancel_reservation(data_dir, "chest", "a") is True
    assert budget.cancel_reservation(data_dir, "chest", "a") is False
    st_ = budget.status(data_dir, "chest")
    assert st_.reserved_epsilon == st_.spent_epsilon == pytest.approx(epsilon(plan[1], delta=DELTA))
    assert st_.jobs[0].state == "released" and st_.jobs[0].calls_charged == 1


def test_ledger_survives_restart(data_dir: DataDir) -> None:
    plan = _plan()
    budget.reserve(data_dir, "chest", job_id="a", plan=plan, description="resnet, 8 rounds")
    budget.charge(data_dir, "chest", job_id="a", call=1, entries=plan[1])
    code = (
        "from domains import budget; from domains.site.datadir import DataDir; import sys;"
        "d = DataDir(sys.argv[1]); s = budget.status(d, 'chest');"
        "print(s.spent_epsilon, s.reserved_epsilon, s.jobs[0].description);"
        "print(budget.charge(d, 'chest', job_id='a', call=1, entries=[]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(data_dir.path)], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    before = budget.status(data_dir, "chest")
    assert out == [f"{before.spent_epsilon} {before.reserved_epsilon} resnet, 8 rounds", "False"]
    assert budget.status(DataDir(data_dir.path), "chest") == before


def test_concurrent_reservations_never_overbook(data_dir: DataDir) -> None:
    code = """
import sys
from domains import budget
from domains.site.datadir import DataDir
from privacy.accounting import eval_entry, training_entry
t = training_entry(noise_multiplier=1.0, n_samples=800, batch_size=64, epochs=2)
p = budget.round_plan(rounds=8, training=t, evaluation=eval_entry())
try:
    budget.reserve(DataDir(sys.argv[1]), "chest", job_id=sys.argv[2], plan=p)
    print("ok")
except budget.PrivacyBudgetExceeded:
    print("refused")
"""
    procs = [subprocess.Popen([sys.executable, "-c", code, str(data_dir.path), f"job{i}"], cwd=REPO,
                              stdout=subprocess.PIPE, text=True) for i in range(3)]
    outcomes = sorted(p.communicate()[0].strip() for p in procs)
    assert outcomes == ["ok", "refused", "refused"]
    assert len(budget.status(data_dir, "chest").jobs) == 1


def test_corrupt_ledger_raises_and_is_not_reset(data_dir: DataDir) -> None:
    path = data_dir.path / "privacy" / "chest.json"
    path.write_text(path.read_text()[:40])
    damaged = path.read_text()
    with pytest.raises(BudgetError, match=r"ledger .*chest\.json is unreadable or damaged"):
        budget.reserve(data_dir, "chest", job_id="a", plan=_plan())
    with pytest.raises(BudgetError, match=r"chest\.json"):
        budget.set_budget(data_dir, "chest", n_samples=N, epsilon_budget=10.0, delta=DELTA)
    with pytest.raises(BudgetError):
        budget.status_frame(data_dir)
    assert path.read_text() == damaged


def test_corrupt_ledger_with_missing_field_raises(data_dir: DataDir) -> None:
    path = data_dir.path / "privacy" / "chest.json"
    raw = json.loads(path.read_text())
    del raw["delta"]
    path.write_text(json.dumps(raw))
    with pytest.raises(BudgetError, match="'delta'"):
        budget.status(data_dir, "chest")


def test_set_budget_republish_keeps_spending(data_dir: DataDir) -> None:
    plan = _plan()
    budget.reserve(data_dir, "chest", job_id="a", plan=plan)
    budget.charge(data_dir, "chest", job_id="a", call=1, entries=plan[1])
    before = budget.status(data_dir, "chest")
    after = budget.set_budget(data_dir, "chest", n_samples=N, epsilon_budget=10.0, delta=DELTA)
    assert after == before and after.spent_epsilon > 0


@pytest.mark.parametrize(("eps", "delta"), [(20.0, DELTA), (10.0, 1e-6), (5.0, DELTA)])
def test_set_budget_change_after_spending_is_refused(data_dir: DataDir, eps: float, delta: float) -> None:
    plan = _plan(1)
    budget.reserve(data_dir, "chest", job_id="a", plan=plan)
    budget.charge(data_dir, "chest", job_id="a", call=1, entries=plan[1])
    with pytest.raises(BudgetError, match="a budget cannot change once used"):
        budget.set_budget(data_dir, "chest", n_samples=N, epsilon_budget=eps, delta=delta)
    assert budget.status(data_dir, "chest").epsilon_budget == 10.0


def test_set_budget_change_before_any_use_is_allowed(data_dir: DataDir) -> None:
    changed = budget.set_budget(data_dir, "chest", n_samples=N, epsilon_budget=3.0, delta=1e-6)
    assert (changed.epsilon_budget, changed.delta) == (3.0, 1e-6)


@pytest.mark.parametrize("delta", [1 / N, 0.01, 0.0, 1.5])
def test_set_budget_refuses_delta_not_below_one_over_n(tmp_path: Path, delta: float) -> None:
    with pytest.raises(BudgetError, match=r"delta must be in \(0, 1/n\) = \(0, 0.00125\) .* use delta=1e-05"):
        budget.set_budget(DataDir(tmp_path), "chest", n_samples=N, delta=delta)


def test_set_budget_default_delta_shrinks_for_large_datasets(tmp_path: Path) -> None:
    assert budget.set_budget(DataDir(tmp_path), "small", n_samples=N).delta == budget.DEFAULT_DELTA
    assert budget.set_budget(DataDir(tmp_path), "huge", n_samples=1_000_000).delta == pytest.approx(1e-7)


@pytest.mark.parametrize("eps", [0.0, -1.0, math.inf, math.nan])
def test_check_budget_refuses_epsilon_that_is_not_positive_and_finite(eps: float) -> None:
    with pytest.raises(BudgetError, match="epsilon budget must be a finite number > 0"):
        budget.check_budget(epsilon_budget=eps, delta=DELTA, n_samples=N)


def test_remove_ledger_drops_an_unused_ledger_only(data_dir: DataDir) -> None:
    budget.set_budget(data_dir, "failed-upload", n_samples=N)
    assert budget.has_ledger(data_dir, "failed-upload")
    budget.remove_ledger(data_dir, "failed-upload")
    assert not budget.has_ledger(data_dir, "failed-upload")
    budget.reserve(data_dir, "chest", job_id="a", plan=_plan(1))
    with pytest.raises(BudgetError, match="never removed"):
        budget.remove_ledger(data_dir, "chest")
    assert budget.has_ledger(data_dir, "chest")


def test_ledger_files_are_private(data_dir: DataDir) -> None:
    budget.reserve(data_dir, "chest", job_id="a", plan=_plan())
    folder = data_dir.path / "privacy"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_dataset_names_with_slashes_stay_inside_the_ledger_folder(data_dir: DataDir) -> None:
    budget.set_budget(data_dir, "../x/y z", n_samples=N)
    names = {p.name for p in (data_dir.path / "privacy").glob("*.json")}
    assert names == {"chest.json", "..%2Fx%2Fy%20z.json"}
    assert list(budget.status_frame(data_dir)["dataset"]) == ["../x/y z", "chest"]


def test_preview_shows_the_reviewers_numbers(data_dir: DataDir) -> None:
    plan = _plan()
    budget.reserve(data_dir, "chest", job_id="a", plan=plan)
    small = _flat(_plan(1, sigma=3.0, epochs=1))
    numbers = budget.preview(data_dir, "chest", small)
    assert numbers["job_epsilon"] == pytest.approx(epsilon(small, delta=DELTA))
    assert numbers["epsilon_after"] == pytest.approx(epsilon(_flat(plan) + small, delta=DELTA))
    assert numbers["remaining_after"] == pytest.approx(10.0 - numbers["epsilon_after"]) and numbers["fits"]
    own = budget.preview(data_dir, "chest", _flat(plan), job_id="a")
    assert own["epsilon_before"] == 0.0 and own["epsilon_after"] == pytest.approx(own["job_epsilon"])


def test_status_frame_has_one_row_per_dataset(data_dir: DataDir) -> None:
    budget.set_budget(data_dir, "knee", n_samples=N, epsilon_budget=4.0)
    budget.reserve(data_dir, "chest", job_id="a", plan=_plan(2))
    frame = budget.status_frame(data_dir).set_index("dataset")
    assert list(frame.index) == ["chest", "knee"]
    assert frame.loc["chest", "jobs"] == 1 and frame.loc["knee", "reserved_epsilon"] == 0.0
    chest = frame.loc["chest"]
    assert chest["remaining_epsilon"] == pytest.approx(10.0 - chest["reserved_epsilon"])


# -- property: random approvals, runs and denials never overspend -------------------------------
SIGMAS = [0.8, 1.0, 2.0, 4.0]


class LedgerMachine(RuleBasedStateMachine):
    """Drives the ledger and an independent model of what it should allow, side by side."""

    @initialize(eps_budget=st.sampled_from([2.0, 6.0, 10.0]))
    def start(self, eps_budget: float) -> None:
        self.tmp = tempfile.mkdtemp()
        self.dir = DataDir(self.tmp)
        self.budget = eps_budget
        budget.set_budget(self.dir, "ds", n_samples=N, epsilon_budget=eps_budget, delta=DELTA)
        self.plans: dict[str, dict[int, list]] = {}
        self.charges: dict[str, dict[int, list]] = {}
        self.active: set[str] = set()

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _committed(self, without: str | None = None) -> list:
        out = []
        for job, plan in self.plans.items():
            if job == without:
                continue
            charged = self.charges.get(job, {})
            out += _flat(charged)
            if job in self.active:
                out += [e for c in sorted(plan) if c not in charged for e in plan[c]]
        return out

    def _eps(self, history: list) -> float:
        return epsilon(history, delta=DELTA)

    @rule(job=st.sampled_from("abcd"), rounds=st.integers(1, 4), sigma=st.sampled_from(SIGMAS),
          epochs=st.integers(1, 2))
    def reserve(self, job: str, rounds: int, sigma: float, epochs: int) -> None:
        plan = _plan(rounds, sigma=sigma, epochs=epochs)
        if job in self.active:
            if plan == self.plans[job]:
                budget.reserve(self.dir, "ds", job_id=job, plan=plan)
            else:
                with pytest.raises(BudgetError):
                    budget.reserve(self.dir, "ds", job_id=job, plan=plan)
            return
        charged = self.charges.get(job, {})
        mine = _flat(charged) + [e for c in sorted(plan) if c not in charged for e in plan[c]]
        after = self._eps(self._committed(without=job) + mine)
        event(f"reserve {'refused' if after > self.budget else 'accepted'}")
        if after > self.budget:
            with pytest.raises(PrivacyBudgetExceeded):
                budget.reserve(self.dir, "ds", job_id=job, plan=plan)
        else:
            numbers = budget.reserve(self.dir, "ds", job_id=job, plan=plan)
            assert numbers["epsilon_after"] == pytest.approx(after)
            self.plans[job], self.active = plan, self.active | {job}

    @rule(job=st.sampled_from("abcd"), call=st.integers(1, 5), extra_epochs=st.sampled_from([0, 0, 5, 20]))
    def charge_any(self, job: str, call: int, extra_epochs: int) -> None:
        self._charge(job, call, extra_epochs)

    @precondition(lambda self: bool(self.active))
    @rule(data=st.data(), extra_epochs=st.sampled_from([0, 0, 5, 20]))
    def charge_approved(self, data: st.DataObject, extra_epochs: int) -> None:
        job = data.draw(st.sampled_from(sorted(self.active)))
        self._charge(job, data.draw(st.sampled_from(sorted(self.plans[job]))), extra_epochs)

    def _charge(self, job: str, call: int, extra_epochs: int) -> None:
        charged = self.charges.setdefault(job, {})
        if call in charged:
            assert budget.charge(self.dir, "ds", job_id=job, call=call, entries=[]) is False
            return
        if job not in self.active or call not in self.plans[job]:
            with pytest.raises(PrivacyBudgetExceeded, match="no ε reservation"):
                budget.charge(self.dir, "ds", job_id=job, call=call, entries=[EVAL])
            return
        entries = self.plans[job][call]
        if extra_epochs:  # the call ran more than approved: only the budget check stands in the way
            sigma = self.plans[job][1][-1][0]
            more = training_entry(noise_multiplier=sigma, n_samples=N, batch_size=64, epochs=extra_epochs)
            entries = [EVAL, more]
        charged[call] = entries
        fits = self._eps(self._committed()) <= self.budget
        event(f"charge {'accepted' if fits else 'refused'}")
        if not fits:
            del charged[call]
            with pytest.raises(PrivacyBudgetExceeded, match="running call"):
                budget.charge(self.dir, "ds", job_id=job, call=call, entries=entries)
        else:
            assert budget.charge(self.dir, "ds", job_id=job, call=call, entries=entries) is True

    @rule(job=st.sampled_from("abcd"))
    def release(self, job: str) -> None:
        assert budget.cancel_reservation(self.dir, "ds", job) is (job in self.active)
        self.active.discard(job)

    @invariant()
    def never_over_budget(self) -> None:
        status = budget.status(self.dir, "ds")
        assert status.spent_epsilon <= status.reserved_epsilon <= self.budget
        assert status.spent_epsilon == pytest.approx(self._eps(_flat_all(self.charges)))
        assert status.reserved_epsilon == pytest.approx(self._eps(self._committed()))


def _flat_all(charges: dict[str, dict[int, list]]) -> list:
    return [e for job in charges.values() for e in _flat(job)]


TestLedgerProperties = LedgerMachine.TestCase
TestLedgerProperties.settings = settings(max_examples=60, stateful_step_count=20, deadline=None)


def test_budget_cli_sets_a_budget_for_an_older_dataset(tmp_path: Path) -> None:
    """A dataset published before budgets existed gets one from the CLI; bad values are one line."""
    import numpy as np
    from support import run_cli

    from domains.data import store
    from domains.site import lifecycle
    data_dir = DataDir(tmp_path / "site")
    lifecycle.initialize(data_dir, name="s", port=1, host="127.0.0.1")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (50, 1, 8, 8), dtype=np.uint8)
    store.save(data_dir, "old", images=images, labels=np.arange(50) % 2,
               meta={"label_names": ["a", "b"], "multi_label": False,
                     "fingerprint_sha256": store.fingerprint(images)})
    missing = run_cli("domain", "budget", "--data-dir", str(data_dir.path), "--jobs")
    assert missing.code == 0 and "old" not in missing.out
    bad = run_cli("domain", "budget", "--data-dir", str(data_dir.path), "--set", "old", "--delta", "0.5")
    assert bad.code == 2 and bad.err.count("\n") == 1 and "delta must be in (0, 1/n)" in bad.err
    ok = run_cli("domain", "budget", "--data-dir", str(data_dir.path), "--set", "old",
                 "--epsilon-budget", "3")
    assert ok.code == 0 and "ε budget 3 at δ=1.0e-05" in ok.out and "3.0" in ok.out


def test_a_thinned_plan_charges_evaluations_only_at_the_approved_calls() -> None:
    train = training_entry(noise_multiplier=1.0, n_samples=N, batch_size=64, epochs=2)
    plan = budget.round_plan(rounds=15, training=train, evaluation=EVAL, eval_calls=(1, 6, 11, 16))
    assert plan[1] == plan[6] == [EVAL, train] and plan[2] == plan[15] == [train] and plan[16] == [EVAL]
    assert sum(e == EVAL for e in _flat(plan)) == 4
    full = budget.round_plan(rounds=15, training=train, evaluation=EVAL)
    assert full == budget.round_plan(rounds=15, training=train, evaluation=EVAL, eval_calls=range(1, 17))
    assert epsilon(_flat(plan), delta=DELTA) < epsilon(_flat(full), delta=DELTA)
