"""The package layout rules of docs/architecture.md, checked on the source tree.

* ``bot/`` and ``engine/`` never import ``adapters``; ``engine/`` never imports ``bot``.
* ``bot/core.py`` (the seam) imports only the standard library at run time.
* no module under ``bot/``, ``engine/`` or ``adapters/`` is over 700 lines.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 700


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path, *, runtime_only: bool = False) -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path`` (``runtime_only``: skip ``if TYPE_CHECKING:`` blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skip: set[int] = set()
    if runtime_only:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                for sub in node.body:
                    skip.update(id(n) for n in ast.walk(sub))
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


@pytest.mark.parametrize(("package", "forbidden"), [("bot", ("adapters",)), ("engine", ("adapters", "bot"))])
def test_imports_point_inwards(package: str, forbidden: tuple[str, ...]) -> None:
    bad = [
        f"{p.relative_to(ROOT)}:{line}: {mod}"
        for p in _modules(package)
        for line, mod in _imports(p)
        if mod.split(".")[0] in forbidden
    ]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_core_module_needs_only_the_standard_library() -> None:
    mods = {m.split(".")[0] for _, m in _imports(ROOT / "bot" / "core.py", runtime_only=True)}
    assert mods - {"__future__"} <= set(sys.stdlib_module_names), mods


@pytest.mark.parametrize("package", ["bot", "engine", "adapters"])
def test_no_module_over_700_lines(package: str) -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules(package) if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by concern): {long}"


def test_tests_read_data_only_from_the_vendored_fixtures() -> None:
    """A fresh clone has no ``../shared``: tests read tests/fixtures (benchmarks take data paths)."""
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("*.py")
        if p != Path(__file__).resolve() and '"shared"' in (src := p.read_text(encoding="utf-8")) or "shared/data" in src
    ]
    assert not offenders, offenders
    assert (ROOT / "tests" / "fixtures" / "README.md").is_file()


def test_the_scheduler_uses_no_apscheduler() -> None:
    """Firings come from our own timer on the triggers' next-firing times (bot/scheduling/timer.py),
    not from a copy of APScheduler 3.x's private loop."""
    users = [str(p.relative_to(ROOT)) for p in _modules("bot") if any(m.split(".")[0] == "apscheduler" for _, m in _imports(p))]
    assert not users, users
