"""The shape of the rooms, held by tests: what each package is for, and what may import what.

``privacy/`` imports neither room and ``domains/`` never imports ``orchestrator/``
(``tests/test_cli.py::test_rooms_keep_their_imports``). Here: the orchestrator uses only what
``domains/__init__`` exports besides the torch-free ``domains.shared``; every package of
``domains/`` says what it is for and exports names that exist; the shared values load without
torch; and ``tests/`` mirrors the packages.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOMAINS = REPO / "domains"
SUBPACKAGES = sorted(p.parent.name for p in DOMAINS.glob("*/__init__.py"))


def _domains_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import of ``domains`` in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "domains"]
        elif isinstance(node, ast.ImportFrom) and not node.level and str(node.module).startswith("domains"):
            found.append((node.lineno, str(node.module), [a.name for a in node.names]))
    return found


def test_the_orchestrator_uses_only_what_domains_exports() -> None:
    import domains

    exported = set(domains.__all__)
    wrong = []
    for path in sorted((REPO / "orchestrator").rglob("*.py")):
        for line, module, names in _domains_imports(path):
            if module == "domains.shared" or module.startswith("domains.shared."):
                continue  # the torch-free values both rooms share
            if module == "domains" and names and set(names) <= exported:
                continue
            wrong.append(f"{path.relative_to(REPO)}:{line} imports {module} {names}")
    assert wrong == [], "export the name from domains/__init__.py or move it to domains.shared"


def test_the_rule_catches_a_deep_import(tmp_path: Path) -> None:
    """The check above reads real import statements, including ``import domains.x`` forms."""
    sample = tmp_path / "sample.py"
    sample.write_text("import domains.site.lifecycle\nfrom domains import Datasite, lifecycle\n")
    assert _domains_imports(sample) == [
        (1, "domains.site.lifecycle", []), (2, "domains", ["Datasite", "lifecycle"])]


@pytest.mark.parametrize("package", ["domains", *(f"domains.{name}" for name in SUBPACKAGES)])
def test_each_package_says_what_it_is_for_and_exports_real_names(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__doc__ and len(module.__doc__.split()) >= 15, f"{package}/__init__.py needs a docstring"
    assert module.__all__, f"{package} exports nothing"
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"


def test_domains_is_made_of_subpackages_only() -> None:
    """Beyond the room's own CLI, errors and lazy-export helper, every module lives in a package."""
    loose = sorted(p.name for p in DOMAINS.glob("*.py"))
    assert loose == ["__init__.py", "cli.py", "errors.py", "lazy.py"]


def test_the_shared_values_load_without_torch() -> None:
    code = ("import sys\n"
            "import domains.shared.spec, domains.shared.counts, domains.shared.server_step\n"
            "import domains.shared.codec, domains.shared.plain_model, domains.shared.signed_round\n"
            "from domains.shared import JobSpec, EvalResult, PlainModel\n"
            "print(sorted(m for m in ('torch', 'opacus', 'monai', 'syft') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tests_mirror_the_packages() -> None:
    tests = REPO / "tests" / "domains"
    assert sorted(p.name for p in tests.iterdir() if p.is_dir() and p.name != "__pycache__") == SUBPACKAGES
