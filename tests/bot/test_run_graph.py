"""``/run show N graph``: the run's picture, coloured by step status, posted in the thread."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.picture import layout_available
from tests.console_process import console

NO_DOT = "run pictures need Graphviz's dot (apt-get install graphviz; .ci/run installs it)"
pytestmark = pytest.mark.skipif(not layout_available(), reason=NO_DOT)


def test_console_writes_the_picture_and_prints_its_path(tmp_path: Path) -> None:
    first = console(tmp_path, "run: echo a THEN fail boom THEN echo never\n")
    assert first.returncode == 0, first.stderr
    second = console(tmp_path, "/run show 1 graph\n/run show 9 graph\n")
    assert second.returncode == 0, second.stderr
    m = re.search(r"Run #1 graph: (\S+\.png)", second.stdout)
    assert m, second.stdout
    path = Path(m.group(1))
    assert path.parent == (tmp_path / "data" / "pictures").resolve()
    assert path.read_bytes().startswith(b"\x89PNG")
    assert "No run #9." in second.stdout
