"""Step result caching (seed 001 "Caching"): ``cache: {ttl: 1h}`` on an idempotent step.

A cached step reuses a stored result of the *same action with the same resolved
arguments and the same inputs* (the outputs of the steps before it and the run's
workflow inputs) while it is younger than its TTL. The key is a SHA-256 over a
canonical JSON of those, so a changed argument or upstream output is a miss.
Only successful results are stored. ``/rerun`` bypasses the cache (the executor is
told to), and a hit is recorded with ``cached=True`` ("(cached)" in the status line).

:class:`StepCache` is the storage seam; :class:`MemoryStepCache` keeps entries in
this process, ``bot.store.cache.SqlStepCache`` in the ``step_cache`` table.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol

from engine.actions import StepOutput
from engine.graph import Node


class StepCache(Protocol):
    """Where cached step results live."""

    async def get(self, key: str, now: datetime) -> StepOutput | None:
        """The stored result for ``key`` when it has not expired at ``now``, else ``None``."""
        ...

    async def put(self, key: str, output: StepOutput, now: datetime, ttl_s: float) -> None:
        """Store ``output`` under ``key`` until ``now + ttl_s`` (replacing an older entry)."""
        ...


def cache_key(node: Node, inputs: Mapping[str, str], workflow_inputs: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the step's kind, resolved arguments, upstream outputs and workflow inputs.

    ``node`` must already have its ``${…}`` references resolved. The node id is not
    part of the key: two steps doing the same thing on the same inputs share it.
    """
    blob = json.dumps(
        {"kind": node.kind, "args": node.args, "inputs": dict(inputs), "workflow_inputs": dict(workflow_inputs)},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class MemoryStepCache:
    """A :class:`StepCache` in a dict (tests, or a process without a database)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[StepOutput, datetime]] = {}

    async def get(self, key: str, now: datetime) -> StepOutput | None:
        got = self.entries.get(key)
        if got is None or got[1] <= now:
            return None
        return got[0]

    async def put(self, key: str, output: StepOutput, now: datetime, ttl_s: float) -> None:
        self.entries[key] = (output, now + timedelta(seconds=ttl_s))


__all__ = ["MemoryStepCache", "StepCache", "cache_key"]
