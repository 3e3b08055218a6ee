"""Workflow text → graph, cached: one compiler shared by the turn and the scheduler."""

from __future__ import annotations

from dataclasses import replace

from engine.catalog import Catalog
from engine.graph import Graph
from engine.parse import compile_text

__all__ = ["WorkflowCompiler"]


class WorkflowCompiler:
    """Compiles workflow text (or a bare workflow name) against a catalogue, with a cache.

    Graphs are immutable and the catalogue is fixed for the process, so compiled
    graphs are cached by text (parsing costs milliseconds on the event loop; at most
    ``size`` entries, oldest dropped first). Errors are not cached: they raise every time.

    Raises (from :meth:`compile`):
        WorkflowSyntaxError, UnknownWorkflowError, DefinitionError: see :mod:`engine.errors`.
    """

    def __init__(self, catalog: Catalog, *, size: int = 1024) -> None:
        self.catalog = catalog
        self.size = size
        self._compiled: dict[str, Graph] = {}

    def compile(self, text: str) -> Graph:
        """The graph of ``text`` (see the class doc)."""
        graph = self._compiled.get(text)
        if graph is None:
            graph = compile_text(text, self.catalog, name=text if text in self.catalog.workflows else None)
            if text in self.catalog.workflows:  # the workflow's own limits hold when it is run by name (issue 17)
                own = self.catalog.graph_for(text, stack=(text,))
                graph = replace(
                    graph,
                    on_max_iterations=own.on_max_iterations,
                    max_parallel_steps=own.max_parallel_steps,
                    fail_fast=own.fail_fast,
                )
            if len(self._compiled) >= self.size:
                self._compiled.pop(next(iter(self._compiled)))
            self._compiled[text] = graph
        return graph
