"""The durable run queue (issue 15): admission writes ``queued`` runs, workers execute them.

* :mod:`bot.queue.admission`: :class:`Admission`, the one entry point that turns a
  request into a queued run (message, delivery id and run in one transaction).
* :mod:`bot.queue.local`: :class:`LocalWorker`, the in-process worker of the
  embedded default (SQLite, or PostgreSQL without separate workers).
* :mod:`bot.queue.scale`: runs as procrastinate jobs for ``baton worker`` processes
  on PostgreSQL.
"""

from bot.queue.admission import Admission, Admitted, permission_problem

__all__ = ["Admission", "Admitted", "permission_problem"]
