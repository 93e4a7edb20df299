"""The import-linter contracts of pyproject.toml (docs/architecture.md): the real tree keeps
every one, and every one catches the forbidden import it exists for.

Each contract gets a copy of the packages with one forbidden import added, and
``lint-imports`` must report that contract (and no other) broken, naming the import. The
forbidden import for a contract is picked from :data:`VIOLATIONS` by what the contract
says (its layers, or its source and forbidden modules), not by its name; a new contract
that none of them breaks fails here until one is added.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
PACKAGES: list[str] = CONFIG["root_packages"]
CONTRACTS: list[dict[str, Any]] = CONFIG["contracts"]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

# (module that gets the import, the module it imports): each one breaks one contract.
VIOLATIONS = [
    ("serving", "streamrec.app.cli"),  # a lower layer imports the entry points
    ("streams", "redis"),  # Redis outside the state package
    ("recmodels", "streamrec.kernel.settings"),  # model code reads the settings class
    ("recmodels.scoring", "recmodels.sasrec"),  # pure scoring imports a model
    ("streamrec.contracts", "faust"),  # a wire contract imports Faust
]



def test_import_linter_is_installed() -> None:
    """The dev extra brings it; without it every check below would fail to run."""
    assert LINT_IMPORTS.exists(), f"import-linter is not installed ({LINT_IMPORTS})"


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _layer(module: str, layers: list[str]) -> int | None:
    for rank, layer in enumerate(layers):
        if any(_within(module, part.strip()) for part in re.split(r"[|:]", layer)):
            return rank
    return None


def violates(contract: dict[str, Any], importer: str, imported: str) -> bool:
    """Whether ``importer`` importing ``imported`` directly breaks ``contract``."""
    if contract["type"] == "layers":
        below, above = (_layer(importer, contract["layers"]),
                        _layer(imported, contract["layers"]))
        return below is not None and above is not None and above < below
    if contract["type"] == "forbidden":
        return (any(_within(importer, m) for m in contract["source_modules"])
                and any(_within(imported, m) for m in contract["forbidden_modules"]))
    return False


@dataclass(frozen=True)
class Lint:
    returncode: int
    text: str  # the output, whitespace collapsed (long contract names wrap)

    def status(self, contract: dict[str, Any]) -> str | None:
        """KEPT or BROKEN, as reported for ``contract``."""
        found = re.search(re.escape(" ".join(contract["name"].split())) + r" (KEPT|BROKEN)\b",
                          self.text)
        return found.group(1) if found else None


def lint_imports(root: Path) -> Lint:
    """``lint-imports`` over the packages under ``root``, with its pyproject.toml."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}
    done = subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    return Lint(done.returncode, " ".join((done.stdout + done.stderr).split()))


def _slug(contract: dict[str, Any]) -> str:
    return "-".join(re.findall(r"\w+", contract["name"].lower())[:4])


def test_the_tree_keeps_every_contract() -> None:
    assert CONTRACTS, "no [[tool.importlinter.contracts]] in pyproject.toml"
    lint = lint_imports(ROOT)
    report = {c["name"]: lint.status(c) for c in CONTRACTS}
    assert lint.returncode == 0, lint.text
    assert all(status == "KEPT" for status in report.values()), report
    assert f"Contracts: {len(CONTRACTS)} kept, 0 broken" in lint.text, lint.text


def _copy_tree(to: Path) -> None:
    """The packages' .py files and pyproject.toml, nothing else."""
    for package in PACKAGES:
        top = package.split(".")[0]
        for source in (ROOT / top).rglob("*.py"):
            target = to / source.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    shutil.copyfile(ROOT / "pyproject.toml", to / "pyproject.toml")


def _module_file(root: Path, module: str) -> Path:
    base = root.joinpath(*module.split("."))
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


@pytest.mark.parametrize("contract", CONTRACTS, ids=_slug)
def test_a_forbidden_import_breaks_the_contract(contract: dict[str, Any],
                                                tmp_path: Path) -> None:
    fitting = [v for v in VIOLATIONS if violates(contract, *v)
               and not any(violates(other, *v) for other in CONTRACTS if other is not contract)]
    assert fitting, (f"contract {contract['name']!r}: no import in VIOLATIONS breaks it "
                     "alone; add one")
    importer, imported = fitting[0]
    _copy_tree(tmp_path)
    target = _module_file(tmp_path, importer)
    target.write_text(target.read_text() + f"\nimport {imported}  # forbidden\n")

    lint = lint_imports(tmp_path)

    assert lint.returncode != 0, lint.text
    assert lint.status(contract) == "BROKEN", lint.text
    assert f"{importer} -> {imported}" in lint.text, lint.text
    others = {c["name"]: lint.status(c) for c in CONTRACTS if c is not contract}
    assert all(status == "KEPT" for status in others.values()), others
