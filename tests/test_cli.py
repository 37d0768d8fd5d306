"""The command line: help on every level, one-line usage errors, and the three rooms' imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support import REPO, run_cli

DOMAIN_ACTIONS = ["deploy", "stop", "status", "publish", "add-scientist", "requests", "review",
                  "approve", "deny", "audit"]


@pytest.mark.parametrize(
    "argv", [[], ["domain"], ["demo"], ["train"], ["baseline"], *(["domain", a] for a in DOMAIN_ACTIONS)]
)
def test_cli_help_on_every_level(argv: list[str]) -> None:
    result = run_cli(*argv, "--help")
    assert result.code == 0 and "usage: medsyft" in result.out


def test_cli_usage_error_is_one_line() -> None:
    result = run_cli("domain", "deploy", "--port", "abc")
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1 and "port must be a number" in result.err


def _imports(package: str) -> set[str]:
    roots = set()
    for path in (REPO / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
    return roots


def test_rooms_keep_their_imports() -> None:
    assert not {"domains", "orchestrator", "medsyft"} & _imports("privacy")
    assert not {"orchestrator", "medsyft"} & _imports("domains")


def test_each_package_is_typed() -> None:
    for package in ("domains", "orchestrator", "privacy", "medsyft"):
        assert (Path(REPO) / package / "py.typed").exists()


# -- medsyft demo --workdir: never delete what the demo did not create ---------------------------
@pytest.mark.parametrize("occupant", ["notes.txt", "hospital-a"])
def test_demo_refuses_a_workdir_it_did_not_create(tmp_path: Path, occupant: str) -> None:
    workdir = tmp_path / "mine"
    workdir.mkdir()
    if occupant.endswith(".txt"):
        (workdir / occupant).write_text("a user's own file")
    else:  # looks like a demo's hospital, but no demo marked this folder
        (workdir / occupant).mkdir()
    result = run_cli("demo", "--workdir", str(workdir))
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "is not empty and is not an earlier demo's folder" in result.err
    assert sorted(p.name for p in workdir.iterdir()) == [occupant]  # untouched


def test_demo_refuses_foreign_entries_in_its_own_workdir(tmp_path: Path) -> None:
    from medsyft.demo import DEMO_MARKER

    workdir = tmp_path / "demo"
    workdir.mkdir()
    (workdir / DEMO_MARKER).write_text("")
    (workdir / "job.toml").write_text("[job]\n")
    (workdir / "my-results.csv").write_text("keep me")
    result = run_cli("demo", "--workdir", str(workdir))
    assert result.code == 2 and "holds 'my-results.csv', which no demo created" in result.err
    assert (workdir / "my-results.csv").read_text() == "keep me" and (workdir / "job.toml").exists()


def test_demo_claims_new_empty_and_its_own_workdirs(tmp_path: Path) -> None:
    from medsyft.demo import DEMO_MARKER, _claim_workdir

    new, empty = tmp_path / "new" / "run", tmp_path / "empty"
    empty.mkdir()
    for workdir in (new, empty):
        _claim_workdir(workdir)
        assert sorted(p.name for p in workdir.iterdir()) == [DEMO_MARKER]
    (empty / "run" / "release").mkdir(parents=True)
    (empty / "job.toml").write_text("[job]\n")
    _claim_workdir(empty)  # an earlier demo's: its own entries go, the folder stays
    assert sorted(p.name for p in empty.iterdir()) == [DEMO_MARKER]


def test_demo_refuses_a_file_as_workdir(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    result = run_cli("demo", "--workdir", str(target))
    assert result.code == 2 and "is a file" in result.err and target.read_text() == "x"


def test_demo_help_says_what_workdir_may_be() -> None:
    out = " ".join(run_cli("demo", "--help").out.split())
    assert "must be new, empty, or an earlier demo's folder" in out and ".medsyft-demo" in out


def test_demo_refuses_an_order_statistic_under_he_before_it_creates_anything(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = run_cli("demo", "--strategy", "fedmedian", "--workdir", str(workdir))
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert "--strategy fedmedian needs --no-he" in result.err
    assert not workdir.exists()


def test_demo_offers_exactly_the_strategies_job_toml_accepts() -> None:
    import typing

    from medsyft.demo import DEMO_STRATEGIES
    from orchestrator.config_tables import _JobTable

    assert tuple(DEMO_STRATEGIES) == typing.get_args(_JobTable.model_fields["strategy"].annotation)


def test_the_docs_list_the_demos_defaults() -> None:
    """docs/training.md's table of the demo's defaults is the demo's parser, flag by flag."""
    from medsyft.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    demo = sub.choices["demo"]  # type: ignore[attr-defined]
    defaults = {opt: a.default for a in demo._actions for opt in a.option_strings}
    section = (REPO / "docs" / "training.md").read_text().split("## The demo's defaults")[1].split("\n## ")[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `--")]
    assert len(rows) >= 10
    for flag_cell, default_cell in rows:
        flag, documented = flag_cell.strip().strip("`"), default_cell.strip()
        assert str(defaults[flag]) == documented, f"{flag}: docs {documented}, demo {defaults[flag]}"


def test_demo_recipe_fills_in_the_flags_left_at_their_defaults(tmp_path: Path) -> None:
    from medsyft.cli import build_parser
    from medsyft.demo import _apply_recipe
    from orchestrator.recipes import RECIPES

    args = build_parser().parse_args(["demo", "--recipe", "dp-logit-adjusted", "--rounds", "3"])
    _apply_recipe(args)
    values = RECIPES["dp-logit-adjusted"].values
    assert args.rounds == 3  # given on the command line: it wins
    for key in ("lr", "batch_size", "optimizer", "loss", "logit_tau", "class_weights", "model"):
        assert getattr(args, key) == values[key], key
    plain = build_parser().parse_args(["demo", "--recipe", "plain-augmented", "--no-dp", "--no-he"])
    _apply_recipe(plain)
    for key, value in RECIPES["plain-augmented"].values.items():  # every key is a demo flag
        assert getattr(plain, key) == value, key
    workdir = tmp_path / "demo"
    result = run_cli("demo", "--recipe", "dp-fastest", "--workdir", str(workdir))
    assert result.code == 2 and "--recipe: unknown recipe 'dp-fastest'" in result.err and not workdir.exists()


def test_the_console_command_exits_with_its_code_after_threads_and_atexit_handlers(tmp_path: Path) -> None:
    """``medsyft`` skips the interpreter's teardown (medsyft.cli.console), not what an exit must do:
    a running thread finishes, atexit handlers run, output is flushed, and the code is main()'s."""
    import subprocess
    import sys

    script = (
        "import atexit, sys, threading, time\n"
        "from medsyft import cli\n"
        "def late():\n"
        "    time.sleep(0.5)\n"
        "    print('thread finished')\n"
        "threading.Thread(target=late).start()\n"
        "atexit.register(lambda: print('atexit ran'))\n"
        "print('buffered', end='')\n"
        f"sys.argv = ['medsyft', 'domain', 'status', '--data-dir', {str(tmp_path / 'none')!r}]\n"
        "cli.console()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert done.returncode == 2  # main()'s code for a usage error
    assert done.stdout.startswith("buffered") and "thread finished" in done.stdout
    assert done.stdout.index("thread finished") < done.stdout.index("atexit ran")
    assert done.stderr.strip().splitlines()[-1].startswith("medsyft: error:")
