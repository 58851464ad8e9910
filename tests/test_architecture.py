"""The layout ARCHITECTURE.md describes: import directions between the top-level packages, and its module table."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("scanner", "worker", "training", "migrations")
# The only arrows allowed between top-level packages (migrations read the scanner's settings and schema; training
# trains the scanner's detector; the scanner's train/evaluate/model commands call training).
ALLOWED = {("scanner", "training"), ("training", "scanner"), ("worker", "scanner"), ("migrations", "scanner")}
# The only modules of the scanner that may import training: the commands that train, evaluate and calibrate.
TRAINING_CALLERS = {"scanner/cli/__init__.py", "scanner/cli/model.py"}


def imported_packages(path: Path) -> set[str]:
    """Top-level project packages a module imports anywhere (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names if name.split(".")[0] in PACKAGES}
    return found


def test_no_module_under_scanner_imports_worker() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "scanner").rglob("*.py") if "worker" in imported_packages(p)]
    assert offenders == []


def test_imports_between_top_level_packages_follow_the_allowed_arrows() -> None:
    arrows = {
        (package, target)
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        for target in imported_packages(path)
        if target != package
    }
    assert arrows <= ALLOWED, arrows - ALLOWED
    assert ("worker", "scanner") in arrows  # the walk sees imports at all


def test_the_detector_stands_alone_and_only_model_commands_call_training() -> None:
    """The product's detector never needs the training code; training reaches the scanner only through it."""
    callers = {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "scanner").rglob("*.py") if "training" in imported_packages(p)
    }
    assert callers <= TRAINING_CALLERS, callers - TRAINING_CALLERS
    assert callers, "the walk sees the model commands' imports"
    detector = [p for p in (ROOT / "scanner" / "detector").rglob("*.py")]
    assert detector and all(imported_packages(p) <= {"scanner"} for p in detector)
    for path in (ROOT / "training").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "scanner":
                assert node.module.startswith(("scanner.detector", "scanner.registry")), (path.name, node.module)


def test_architecture_table_names_every_scanner_module() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    modules = [p.relative_to(ROOT).as_posix() for p in (ROOT / "scanner").rglob("*.py") if p.name != "__init__.py"]
    missing = [m for m in modules if f"`{m}`" not in text]
    assert missing == []
