"""A run's picture for chat: ``/run show N graph`` (and the dashboard's run graph).

The picture is drawn from the run's stored graph and step records
(:mod:`engine.picture`), coloured by step status, and posted through the outlet's
optional ``send_file``: Slack uploads it into the thread, Discord attaches it, the
console writes it under ``<data_dir>/pictures`` and prints the path. Rendering runs
Graphviz in a worker thread so the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from engine.picture import INSTALL_HINT, Picture, layout_available, picture, render

if TYPE_CHECKING:
    from bot.store import RunStore


class PictureError(LookupError):
    """No picture can be made: unknown run, or Graphviz missing (the message says which and what to do)."""


async def run_picture(runs: RunStore, run_id: int) -> Picture:
    """The drawing model of run ``run_id`` with each step's latest status.

    Raises:
        PictureError: there is no such run.
    """
    got = await runs.get(run_id)
    if got is None:
        raise PictureError(f"No run #{run_id}.")
    row, steps = got
    title = f"Run #{row.id} ({row.status}): {row.graph.name or row.source}"
    return picture(row.graph, {s.node_id: s for s in steps}, title=title)


async def run_png(runs: RunStore, run_id: int) -> bytes:
    """Run ``run_id``'s picture as PNG bytes.

    Raises:
        PictureError: no such run, or Graphviz's ``dot`` is not installed (with the install hint).
    """
    pic = await run_picture(runs, run_id)
    if not layout_available():
        raise PictureError(f"I cannot draw run #{run_id} here: {INSTALL_HINT}.")
    return await asyncio.to_thread(render, pic, "png")


__all__ = ["PictureError", "run_picture", "run_png"]
