"""The layer contracts of docs/architecture.md (``[tool.importlinter]`` in pyproject.toml)
hold on the tree, and a deliberate breach fails them, naming the chain that breaks."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PURE_EVALUATION = "The evaluation core does no network, file, thread or clock work"
NO_SESSIONS = "API and UI open no sessions: nothing from storage, SQLAlchemy or SQLModel"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def copy_of_the_tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("flags", "stages", "controller"):
        shutil.copytree(ROOT / package, tree / package, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    return tree


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = lint_imports(copy_of_the_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_core_module_importing_the_shell_is_refused(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    with (tree / "stages" / "actions.py").open("a") as module:
        module.write("\nimport controller.http.app  # a deliberate breach\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "The cores import no shell, framework or database BROKEN" in result.stdout
    assert "stages.actions -> controller.http.app" in result.stdout


def test_a_route_reading_tables_directly_is_refused(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    with (tree / "controller" / "api" / "flags.py").open("a") as module:
        module.write("\nfrom controller.storage.tables import FlagRow  # noqa: F401\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "controller.api.flags -> controller.storage.tables" in result.stdout


def test_a_route_opening_its_own_session_is_refused(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    with (tree / "controller" / "api" / "rollouts.py").open("a") as module:
        module.write("\nfrom controller.storage.store import Store  # noqa: F401\n")
    with (tree / "controller" / "ui" / "routes.py").open("a") as module:
        module.write("\nfrom sqlmodel import Session  # noqa: F401\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert f"{NO_SESSIONS} BROKEN" in result.stdout
    assert "controller.api.rollouts -> controller.storage.store" in result.stdout
    assert "controller.ui.routes -> sqlmodel" in result.stdout


def test_an_evaluation_module_opening_a_socket_is_refused(tmp_path: Path) -> None:
    tree = copy_of_the_tree(tmp_path)
    with (tree / "flags" / "evaluate.py").open("a") as module:
        module.write("\nimport socket  # noqa: F401  a deliberate breach\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert f"{PURE_EVALUATION} BROKEN" in result.stdout
    assert "flags.evaluate -> socket" in result.stdout


def test_the_core_importing_the_sdk_is_refused_with_the_chain_to_its_threads(
    tmp_path: Path,
) -> None:
    tree = copy_of_the_tree(tmp_path)
    with (tree / "flags" / "snapshot.py").open("a") as module:
        module.write("\nimport flags.sdk.reporting  # noqa: F401  a deliberate breach\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert f"{PURE_EVALUATION} BROKEN" in result.stdout
    assert "flags.snapshot is not allowed to import flags.sdk" in result.stdout
    assert "flags.snapshot is not allowed to import threading" in result.stdout
    assert "flags.sdk.reporting -> threading" in result.stdout


def test_the_pure_evaluation_contract_names_every_core_module() -> None:
    # import-linter has no "flags but flags.sdk": the contract lists the modules, so a
    # new core module must be added there to be checked at all.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = (
        c for c in config["tool"]["importlinter"]["contracts"] if c["name"] == PURE_EVALUATION
    )
    core = {
        f"flags.{entry.stem}"
        for entry in (ROOT / "flags").iterdir()
        if (entry.suffix == ".py" and entry.name != "__init__.py")
        or ((entry / "__init__.py").exists() and entry.name != "sdk")
    }
    assert core
    assert set(contract["source_modules"]) == core
