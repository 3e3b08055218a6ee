"""The chaos suite's summary line: printed at the end of the session whether or not ``-s`` is
given (a terminal-summary hook), one line per backend with its counts."""

from __future__ import annotations

from typing import Any


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.chaos.stats import COUNTS

    if not COUNTS:
        return
    terminalreporter.section("chaos summary")
    for backend, c in sorted(COUNTS.items()):
        fields = " ".join(f"{k}={v}" for k, v in sorted(c.items()))
        terminalreporter.write_line(f"chaos {backend}: {fields}")
