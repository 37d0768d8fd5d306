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
