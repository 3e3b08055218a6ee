"""Fuzzy name suggestions ("unknown workflow: did you mean …").

One implementation serves the engine, the bot's commands and the router: it lives in
:mod:`engine.catalog` and is re-exported here for the routing package.
"""

from engine.catalog import _canon, close_names

__all__ = ["_canon", "close_names"]
