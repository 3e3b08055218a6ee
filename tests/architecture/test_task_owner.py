"""One owner for background tasks: no bare ``asyncio.create_task``/``ensure_future`` in bot/ or adapters/.

Long-lived tasks start through :class:`bot.tasks.TaskOwner` (kept until done, a failure
logged, cancelled and awaited at shutdown). Structured helpers are fine
(``asyncio.TaskGroup.create_task``, ``asyncio.gather``/``wait`` on owned tasks); a call of
``asyncio.create_task``/``asyncio.ensure_future`` (or of ``create_task`` on the running
loop) is what this forbids. engine/ is out of scope: it never imports bot and scopes
its tasks with TaskGroups.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ALLOWED = {
    "bot/tasks.py",  # TaskOwner itself
}
# Modules whose tasks are owned by the object that starts them (started and awaited there):
ALLOWED_PREFIXES = (
    "bot/store/",  # the stores' checkpoint writer tasks (started and awaited by the store itself)
)

_BARE = {"create_task", "ensure_future"}


def _bare_spawns(path: Path) -> list[int]:
    """Lines of ``asyncio.create_task(…)``, ``asyncio.ensure_future(…)``, ``loop.create_task(…)``
    on ``asyncio.get_running_loop()``/``get_event_loop()``, and ``create_task``/``ensure_future``
    imported from asyncio."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "asyncio" for a in n.names if a.name in _BARE}
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Attribute) and f.attr in _BARE:
            owner = ast.unparse(f.value)
            if owner == "asyncio" or owner.startswith(("asyncio.get_running_loop(", "asyncio.get_event_loop(")):
                lines.append(node.lineno)
        elif isinstance(f, ast.Name) and f.id in imported:
            lines.append(node.lineno)
    return lines


def _allowed(rel: str) -> bool:
    return rel in ALLOWED or rel.startswith(ALLOWED_PREFIXES)


def test_no_bare_background_tasks_outside_the_task_owner() -> None:
    bad = [
        f"{rel}:{line}"
        for package in ("bot", "adapters")
        for path in sorted((ROOT / package).rglob("*.py"))
        if not _allowed(rel := path.relative_to(ROOT).as_posix())
        for line in _bare_spawns(path)
    ]
    assert not bad, "start background tasks through bot.tasks.TaskOwner, not bare asyncio.create_task/ensure_future:\n" + "\n".join(bad)


def test_the_rule_sees_every_spelling(tmp_path: Path) -> None:
    """The check itself can fail: each way of spawning a bare task is found."""
    src = tmp_path / "m.py"
    src.write_text(
        "import asyncio\nfrom asyncio import ensure_future as ef\n"
        "async def f(c):\n"
        "    asyncio.create_task(c)\n"
        "    asyncio.ensure_future(c)\n"
        "    asyncio.get_running_loop().create_task(c)\n"
        "    ef(c)\n"
        "    async with asyncio.TaskGroup() as tg:\n"
        "        tg.create_task(c)\n"
    )
    assert _bare_spawns(src) == [4, 5, 6, 7]
