"""Scale-out on PostgreSQL: queued runs executed as procrastinate jobs by ``baton worker`` processes.

Front processes (``baton run --adapter slack``, Discord, ``baton serve``) only admit:
:class:`bot.queue.admission.Admission` commits the ``queued`` run, then
:meth:`ScaleOut.enqueue` defers one procrastinate job for it, with

* ``lock`` = the thread key: a thread's runs never overlap and run in admission
  order (procrastinate starts a locked job only when no earlier job with the same
  lock is waiting or running), while other threads run in parallel;
* ``queueing_lock`` = the run id: a run has at most one waiting job (the start-up
  and periodic sweeps may try again; a front that died between its commit and the
  deferral leaves a queued run the sweep finds).

A worker (:class:`RunWorker`) claims the run in one autocommitted ``UPDATE … FROM
threads … RETURNING`` (``queued``/``running`` → ``running``, ``attempts + 1``, its
name, heartbeat and start time), which also returns the graph, the thread's key, id
and ``updated_at`` (for :meth:`bot.store.SessionStore.known`) and whether step records
exist: a duplicate job is a no-op, and a fresh run needs no other read before it starts. It executes the run with Baton's own executor from the
run's checkpoints (a resumed run repeats no completed step). One heartbeat loop per
worker updates every run it executes in one statement (every ``min([queue] heartbeat,
0.5)`` seconds) and reads their ``control`` column back, where any process records
``/cancel``. A run claimed more than ``[queue] max_attempts`` times (its worker died
each time: a poison run) is failed with that reason. An ``approve`` step waiting in a
worker is decided from any process through ``approval_decisions`` (bot/approvals.py).

Cost per run (bench/scale_out.py, 3 ``echo`` steps; bench/scale_roundtrips.py counts
Baton's statements; bench/procrastinate_ceiling.py measures procrastinate alone): the
job's fetch and finish (procrastinate, autocommit connections checked without a round
trip: one round trip each), the claim (one statement on a connection the worker holds
for claims and heartbeats: no pool checkout, no pre-ping), the checkpoint upserts (one
autocommitted statement shared by the steps finishing together), and one autocommitted
statement storing the result message with the final status (:class:`_FinalStatus`);
about 4.5-5 ms of worker CPU and 2.5-3 ms of PostgreSQL CPU per run on the shared
2-core machine (procrastinate alone: about 1.2 and 0.8 ms per no-op job). At the front, an admission is one transaction of one statement
(the run insert returns the thread's active runs) and the jobs of concurrent
admissions are deferred in one statement (:meth:`ScaleOut.enqueue`).

Stalled workers: every worker also runs a reaper (every second): jobs of workers
whose procrastinate heartbeat is older than ``[queue] stalled_after`` are retried
(procrastinate's public ``JobManager.get_stalled_jobs`` / ``retry_job``), which also
frees their thread's lock; the run resumes on a live worker within a few seconds.
Workers poll for jobs every ``[queue] poll_interval`` seconds besides LISTEN/NOTIFY,
so a released lock does not wait procrastinate's default 5 s poll.

Schema: ``baton db upgrade`` applies procrastinate's schema next to Baton's Alembic
migrations (:func:`apply_schema`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import select as io_select
import socket
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import procrastinate
from procrastinate import exceptions as pexc
from sqlalchemy import BigInteger, String, and_, any_, bindparam, cast, column, exists, func, literal, or_, select, table, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.settings import QueueSettings
from bot.store import RunStore, SessionStore, StoreError, ThreadKey
from bot.store.db import CONNECTION_ERRORS, store_error
from bot.store.tables import runs, step_runs, threads
from bot.tasks import TaskOwner
from engine.graph import Graph

log = logging.getLogger("baton.queue")

QUEUE = "baton_runs"
TASK = "baton.run"


def conninfo(url: str) -> str:
    """A libpq connection string from Baton's SQLAlchemy URL (``postgresql+asyncpg://…``).

    Raises:
        ValueError: the URL is not a PostgreSQL URL (scale-out needs PostgreSQL).
    """
    if not url.startswith("postgresql"):
        raise ValueError(f"scale-out workers need PostgreSQL; BATON_DATABASE_URL is {url.split(':', 1)[0]}")
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest


def thread_lock(key: ThreadKey) -> str:
    """The procrastinate lock of a thread's runs."""
    return f"baton:{key.platform}:{key.channel}:{key.thread}"


def make_app(url: str, *, pool_size: int = 4) -> procrastinate.App:
    """A procrastinate app on Baton's database, with the run task registered.

    ``pool_size``: the most connections its psycopg pool opens (fetching and finishing a
    job take one each, briefly; a worker's LISTEN has its own). The pool's connections are
    in autocommit mode (one round trip per procrastinate query) and are checked without a
    round trip (:func:`_idle_check`).
    """
    size = max(2, pool_size)
    # every procrastinate query is one statement (a function call): autocommit connections
    # spare the BEGIN and COMMIT round trips psycopg's pool adds around each one otherwise
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo(url), min_size=min(2, size), max_size=size, configure=_autocommit, pool_factory=_pool
    )
    app = procrastinate.App(connector=connector)
    app.task(name=TASK, queue=QUEUE, pass_context=True)(_run_job)
    return app


async def _autocommit(conn: Any) -> None:
    """psycopg_pool's ``configure`` callback: a new pool connection in autocommit mode."""
    await conn.set_autocommit(True)


def _pool(**kwargs: Any) -> Any:
    """procrastinate's ``pool_factory``: psycopg_pool's pool with :func:`_idle_check` as its
    ``check`` instead of the ``check_connection`` procrastinate asks for (an empty query:
    one more round trip per procrastinate query, ~10% of a worker's CPU under load)."""
    import psycopg_pool

    return psycopg_pool.AsyncConnectionPool(**{**kwargs, "check": _idle_check})


async def _idle_check(conn: Any) -> None:
    """psycopg_pool's ``check`` callback, without a round trip: an idle pool connection has
    nothing to read, so a readable socket means the server closed it (a terminated backend
    sends its error and EOF) or sent something unexpected; either way it is closed, so the
    pool discards it and hands out another. A connection that dies while a query runs fails that query, and
    psycopg_pool discards it when it is returned (its state is bad).

    Raises:
        psycopg.OperationalError: the connection is closed or has unread input.
    """
    import psycopg

    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the pool connection is closed")
    # poll(), not select(): select() takes no descriptor from FD_SETSIZE (1024) up (ValueError),
    # which a process with many sockets open (SSE clients, shell steps' pipes) hands out
    poller = io_select.poll()
    poller.register(conn.fileno(), io_select.POLLIN)
    if poller.poll(0):  # never blocks; readable, or hung up / in error
        # closed here: psycopg_pool puts a connection that failed its check back unless it is
        # closed or broken, and psycopg has not read the server's goodbye (its status is OK)
        await conn.close()
        raise psycopg.OperationalError("the idle pool connection has unread input (closed by the server?)")


async def apply_schema(url: str) -> bool:
    """Apply procrastinate's schema unless it is there; returns whether it was applied.

    Raises:
        StoreError: the database could not be reached.
    """
    app = make_app(url)
    try:
        async with app.open_async():
            row = await app.connector.execute_query_one_async("select to_regclass('procrastinate_jobs') is not null as present")
            if row["present"]:
                return False
            await app.schema_manager.apply_schema_async()
            return True
    except pexc.ProcrastinateException as e:
        raise StoreError(f"applying procrastinate's schema failed: {e}") from e
    except OSError as e:
        raise StoreError(f"applying procrastinate's schema failed: {e}") from e


async def _run_job(context: procrastinate.JobContext, run_id: int) -> None:
    worker: RunWorker = context.additional_context["baton"]
    await worker.execute(run_id)


class ScaleOut:
    """The front side: defers a job per admitted run (and sweeps for queued runs without one).

    Args:
        url: the PostgreSQL URL.
        runs, sessions: the stores (to find queued runs and their threads).
        tasks: starts the deferral task (the App's :class:`bot.tasks.TaskOwner`); default: an
            owner of its own.
    """

    def __init__(self, url: str, runs: RunStore, sessions: SessionStore, *, tasks: TaskOwner | None = None) -> None:
        self.url = url
        self.tasks = tasks or TaskOwner("scale-out", logger=log)
        self.runs = runs
        self.sessions = sessions
        self.app = make_app(url)
        self._open = False
        self._opening = asyncio.Lock()
        self._pending: list[tuple[int, ThreadKey, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    def size_pool(self, pool_size: int) -> None:
        """Use a procrastinate pool of at most ``pool_size`` connections (call before :meth:`open`).

        Raises:
            RuntimeError: the pool is open already.
        """
        if self._open:
            raise RuntimeError("procrastinate's pool is open already")
        self.app = make_app(self.url, pool_size=pool_size)

    async def open(self) -> None:
        """Open procrastinate's connection pool (once, however many admissions ask at once)."""
        async with self._opening:
            if not self._open:
                await self.app.open_async()
                self._open = True

    async def aclose(self) -> None:
        """Close the pool (deferrals under way are cancelled)."""
        if self._flusher is not None and not self._flusher.done():
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._open:
            await self.app.close_async()
            self._open = False

    async def enqueue(self, run_id: int, key: ThreadKey) -> None:
        """Defer the job of committed run ``run_id`` (a no-op when one is already waiting);
        returns once it is deferred.

        Deferrals asked for meanwhile (concurrent admissions) go to the database together, in
        one statement (procrastinate's ``JobManager.batch_defer_jobs_async``), in the order they
        were asked for; a batch that meets a waiting job (``AlreadyEnqueued``) is deferred again
        job by job.

        Raises:
            procrastinate.exceptions.ProcrastinateException: the deferral failed (the run stays
                queued; the sweep defers it later).
        """
        await self.open()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((run_id, key, fut))
        if self._flusher is None or self._flusher.done():
            self._flusher = self.tasks.start(self._flush(), name="baton-defer")
        await asyncio.shield(fut)

    async def _flush(self) -> None:
        """Defer what :meth:`enqueue` queued, a batch at a time, until nothing is pending."""
        batch: list[tuple[int, ThreadKey, asyncio.Future[None]]] = []
        try:
            while self._pending:
                await asyncio.sleep(0)  # admissions finishing in this loop iteration join the batch
                batch, self._pending = self._pending, []
                try:
                    await self._defer(batch)
                except Exception as e:
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_exception(e)
                else:
                    for _, _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)
                batch = []
        finally:  # cancelled (aclose): nobody waits forever
            for _, _, fut in (*batch, *self._pending):
                if not fut.done():
                    fut.cancel()

    def _job(self, run_id: int, key: ThreadKey) -> Any:
        return self.app.configure_task(TASK, lock=thread_lock(key), queueing_lock=f"baton:run:{run_id}")

    async def _defer(self, batch: list[tuple[int, ThreadKey, asyncio.Future[None]]]) -> None:
        if len(batch) > 1:
            try:
                await self.app.job_manager.batch_defer_jobs_async([self._job(rid, key).make_new_job(run_id=rid) for rid, key, _ in batch])
                return
            except pexc.AlreadyEnqueued:
                pass  # one of them has a waiting job (a sweep): defer each on its own
        for rid, key, _ in batch:
            try:
                await self._job(rid, key).defer_async(run_id=rid)
            except pexc.AlreadyEnqueued:
                pass

    async def sweep(self, older_than_s: float = 0.0) -> list[int]:
        """Defer a job for every queued run (older than ``older_than_s``) that has none waiting
        or running (a front died between its commit and the deferral). A dead worker's
        running runs are not swept: the reaper retries their own jobs, which keeps their
        place in the thread's order."""
        rows = await self.runs.db.execute(_QUEUED, {"before": _ago(older_than_s)}, what="finding queued runs")
        done = []
        for run_id, thread_id in rows:
            key = await self.sessions.key_for(thread_id)
            await self.enqueue(int(run_id), key)
            done.append(int(run_id))
        return done

    # the LocalWorker interface the Bot and RunManager use (here: nothing runs in this process)

    def submit(self, run_id: int, key: ThreadKey, **_: Any) -> asyncio.Future[None]:
        """Nothing to do here (the job was deferred at admission); a finished future."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def recover(self, platforms: set[str]) -> list[int]:
        """At a front's start: make sure every queued run has a job (workers resume running ones)."""
        return await self.sweep()

    def cancel_queued(self, run_id: int) -> bool:
        return False

    async def request_cancel(self, run_id: int) -> bool:
        """Record ``/cancel`` for the run's worker (any process); False when the run is not active."""
        return await request_cancel(self.runs, run_id)

    busy = False
    """Nothing is served in a front process."""

    async def wait_idle(self) -> None:
        """Nothing to wait for here (workers execute the runs)."""
        return None


def _ago(seconds: float) -> datetime:
    from datetime import timedelta

    return datetime.now(UTC) - timedelta(seconds=seconds)


# procrastinate's jobs table is part of its documented schema; a run's job carries the
# queueing lock "baton:run:<id>" (kept while the job is doing)
_jobs = table("procrastinate_jobs", column("queueing_lock"), column("status"))
_QUEUED = (
    select(runs.c.id, runs.c.thread_id)
    .where(
        runs.c.status == "queued",
        runs.c.created_at <= bindparam("before", type_=runs.c.created_at.type),
        ~exists().where(
            _jobs.c.queueing_lock == literal("baton:run:") + cast(runs.c.id, String),
            cast(_jobs.c.status, String).in_(["todo", "doing"]),
        ),
    )
    .order_by(runs.c.id)
)
_CANCEL = (
    update(runs)
    .where(runs.c.id == bindparam("rid"), runs.c.status.in_(["queued", "running"]))
    .values(control="cancel")
    .returning(runs.c.id)
)
_CLAIM = (
    update(runs)
    .where(
        runs.c.id == bindparam("rid"),
        runs.c.thread_id == threads.c.id,
        or_(
            runs.c.status == "queued",
            and_(
                runs.c.status == "running",
                or_(runs.c.heartbeat_at.is_(None), runs.c.heartbeat_at < bindparam("stale", type_=runs.c.heartbeat_at.type)),
            ),
        ),
    )
    .values(
        status="running",
        attempts=runs.c.attempts + 1,
        worker=bindparam("me"),
        heartbeat_at=bindparam("now", type_=runs.c.heartbeat_at.type),
        started_at=func.coalesce(runs.c.started_at, bindparam("now", type_=runs.c.started_at.type)),
    )
    .returning(
        runs.c.attempts, runs.c.control, runs.c.fired_by, runs.c.graph, runs.c.rerun_of,
        threads.c.platform, threads.c.channel, threads.c.thread,
        exists().where(step_runs.c.run_id == runs.c.id).correlate(runs).label("has_steps"),
        threads.c.id, threads.c.updated_at,
    )
)
_STATE = select(runs.c.status, runs.c.heartbeat_at).where(runs.c.id == bindparam("rid"))
_BEAT = (
    update(runs)
    .where(runs.c.id == any_(bindparam("ids", type_=ARRAY(BigInteger))), runs.c.worker == bindparam("me"))
    .values(heartbeat_at=bindparam("now", type_=runs.c.heartbeat_at.type))
    .returning(runs.c.id, runs.c.control)
)


# on a table clause of only the columns it writes: SQLAlchemy adds to an UPDATE's SET every
# execution parameter named like a column of its table, and the message's parameters
# (created_at…) share this statement's
_runs_final = table(
    "runs", column("id", BigInteger), column("status", String), column("error", String), column("finished_at", runs.c.finished_at.type)
)
_FINAL = (
    update(_runs_final)
    .where(_runs_final.c.id == bindparam("final_rid"))
    .values(status=bindparam("final_status"), error=bindparam("final_error"),
            finished_at=bindparam("final_now", type_=runs.c.finished_at.type))
)


class _FinalStatus:
    """A run's final status as a :class:`bot.store.sessions.TxHook`: written with the run's
    result message (:attr:`bot.runs.RunManager.final_hook`), atomically: in the same
    statement (``cte``: a ``WITH`` of the message's insert, autocommitted: one round trip)
    when the thread is known, else in the same transaction (``sa``)."""

    cte = _FINAL

    def __init__(self, run_id: int, status: str, error: str | None) -> None:
        now = datetime.now(UTC)
        self.params = {"final_rid": run_id, "final_status": status, "final_error": error, "final_now": now}

    def sqlite(self, conn: Any, thread_id: int, message_id: int) -> None:
        raise RuntimeError("scale-out workers run on PostgreSQL only")

    async def sa(self, conn: Any, thread_id: int, message_id: int) -> None:
        await conn.execute(_FINAL, self.params)


async def request_cancel(store: RunStore, run_id: int) -> bool:
    """Record a cancel request for queued or running run ``run_id`` (read by its worker)."""
    return bool(await store.db.execute(_CANCEL, {"rid": run_id}, what=f"cancelling run {run_id}"))


class RunWorker:
    """Executes claimed runs in a ``baton worker`` process.

    One claim statement per run returns everything needed to start it (the graph, the
    thread's key, whether step records exist); one :meth:`heartbeat` loop per process
    beats all the runs it executes in one statement and acts on recorded cancels.

    Args:
        app: the worker's :class:`bot.app.App` (stores, executor, run manager, outlets).
        settings: ``[queue]``.
        name: this worker's name (host and pid by default).
    """

    def __init__(self, app: Any, settings: QueueSettings, name: str | None = None) -> None:
        self.app = app
        self.settings = settings
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.running: set[int] = set()
        """Ids of the runs this worker executes now (heartbeated by :meth:`heartbeat`)."""
        self._conn: AsyncConnection | None = None  # held for claims and heartbeats (no pool checkout, no pre-ping)
        self._conn_lock = asyncio.Lock()
        if getattr(app.runs.db, "dialect", None) == "postgresql":
            app.manager.final_hook = _FinalStatus  # the final status commits with the result message

    async def execute(self, run_id: int) -> None:
        """Claim run ``run_id`` and execute it to the end (or to a cancel); see the module docs."""
        runs_, manager = self.app.runs, self.app.manager
        claimed = await self._claim(run_id)
        if claimed is None:
            return  # finished, cancelled, or executed by a duplicate job before
        attempts, control, fired_by, graph_json, rerun_of, platform, channel, thread, has_steps, thread_id, touched = claimed
        key = ThreadKey(platform, channel, thread)
        self.app.sessions.known(key, thread_id, touched)  # the result message: one statement, no thread lookup
        if control == "cancel":
            await runs_.set_status(run_id, "cancelled", error="cancelled by request")
            await manager._tell(key, f"Run #{run_id} cancelled before it started.")
            return
        graph = Graph.from_json(graph_json)
        if attempts > self.settings.max_attempts:
            reason = f"gave up after {attempts - 1} attempts: the worker executing it stopped each time (a poison run)"
            await runs_.set_status(run_id, "failed", error=reason)
            await manager._tell(key, f"Run #{run_id} failed: {reason}.")
            return
        prior = await runs_.load(str(run_id)) if has_steps else {}
        if attempts > 1:
            done = sum(1 for s in prior.values() if s.status in ("succeeded", "failed"))
            await manager._tell(key, f"Resuming run #{run_id} on worker {self.name} ({done} of {len(graph.steps)} steps already done).")
        self.running.add(run_id)
        try:
            active = manager._launch(run_id, key, graph, prior, fired_by, use_cache=rerun_of is None, claimed=True)
            await asyncio.gather(active.task, return_exceptions=True)
        finally:
            self.running.discard(run_id)

    async def _claim(self, run_id: int) -> tuple[Any, ...] | None:
        """Claim the run; a ``running`` run is taken over only once its heartbeat is older than
        ``stalled_after`` (a worker declared dead by procrastinate may merely be slow: the
        job waits, holding the thread's lock, until the run ends or its heartbeat stops).
        Returns the claim's row, ``None`` when the run is not to be executed."""
        db = self.app.runs.db
        while True:
            now = datetime.now(UTC)
            stale = now - timedelta(seconds=self.settings.stalled_after)
            got = await self._one(_CLAIM, {"rid": run_id, "me": self.name, "now": now, "stale": stale}, f"claiming run {run_id}")
            if got:
                return got[0]
            state = await db.execute(_STATE, {"rid": run_id}, what=f"reading run {run_id}")
            if not state or state[0][0] != "running":
                return None
            await asyncio.sleep(min(self.settings.heartbeat, 0.5))

    async def _one(self, stmt: Any, params: Mapping[str, Any], what: str) -> list[tuple[Any, ...]]:
        """Run one statement in autocommit mode (no BEGIN/COMMIT round trips); returns its rows.

        The held connection found dead when it is used (the server closed it while idle:
        a restart, a terminated backend) is replaced and the statement tried once more on
        the new one; a failure on a new connection is the database's.

        Raises:
            StoreError: the database failed; the message names ``what``.
        """
        db = self.app.runs.db
        async with self._conn_lock:  # one statement at a time on the held connection
            for fresh in (self._conn is None, True):
                try:
                    if self._conn is None:
                        self._conn = await db.autocommit_engine.connect()
                    return [tuple(r) for r in (await self._conn.execute(stmt, params)).all()]
                except (OperationalError, DBAPIError, *CONNECTION_ERRORS) as e:
                    await self._drop()
                    if fresh or not (isinstance(e, DBAPIError) and e.connection_invalidated):
                        raise store_error(what, e) from e
                    log.info("%s: the held connection was closed (%s); on a new one", what, type(e.orig).__name__)
                except BaseException:  # cancelled mid-statement: the connection's state is unknown
                    await asyncio.shield(self._drop())
                    raise
            raise AssertionError("unreachable: the second attempt returns or raises")

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.invalidate()
            except (OperationalError, DBAPIError, *CONNECTION_ERRORS):
                pass  # the connection is gone already; it was what failed

    async def aclose(self) -> None:
        """Return the held connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def heartbeat(self) -> None:
        """Forever: every ``min([queue] heartbeat, 0.5)`` seconds, heartbeat every run this worker
        executes (one statement) and cancel those whose ``control`` says ``cancel``."""
        while True:
            await asyncio.sleep(min(self.settings.heartbeat, 0.5))
            if not self.running:
                continue
            try:
                got = await self._one(_BEAT, {"ids": list(self.running), "me": self.name, "now": datetime.now(UTC)}, "heartbeat")
            except StoreError as e:
                log.warning("heartbeat of %d runs failed: %s", len(self.running), e)
                continue
            cancels = [int(rid) for rid, control in got if control == "cancel"]
            if cancels:
                await asyncio.gather(*(self.app.manager.cancel(rid) for rid in cancels))

    async def reap(self, proc: procrastinate.App, scale: ScaleOut) -> None:
        """Forever (every second): retry jobs of dead workers, defer jobs for queued runs without
        one, and keep the planner's idea of the jobs table's size current (:func:`refresh_queue_stats`)."""
        jm = proc.job_manager
        while True:
            await asyncio.sleep(1.0)
            try:
                for job in await jm.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=self.settings.stalled_after):
                    try:
                        await jm.retry_job(job)
                        log.warning("re-queued job %s (run %s) of a dead worker", job.id, job.task_kwargs.get("run_id"))
                    except pexc.ProcrastinateException as e:
                        log.info("job %s not re-queued (another reaper was first?): %s", job.id, type(e).__name__)
                await jm.prune_stalled_workers(self.settings.stalled_after * 3)
                await scale.sweep(older_than_s=5.0)
                await refresh_queue_stats(proc)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the reaper failed; trying again")


# the jobs table's live rows (the statistics collector, current within a second or so) against
# the rows the planner believes in (pg_class.reltuples: the last ANALYZE; -1 before the first)
_STATS_LAG = """
select coalesce(s.n_live_tup, 0) as live, greatest(c.reltuples, 0)::bigint as planned
from pg_class c left join pg_stat_user_tables s on s.relid = c.oid
where c.oid = to_regclass('procrastinate_jobs')
"""


async def refresh_queue_stats(proc: procrastinate.App, *, grown: float = 2.0, slack: int = 200) -> bool:
    """``ANALYZE procrastinate_jobs`` when the table holds more than ``grown`` times (plus
    ``slack`` rows) what the planner last saw; returns whether it did.

    Why: procrastinate's ``fetch_job`` picks the first job whose lock is free. Planned for
    a near-empty table (a queue that is usually drained, then gets a burst; a fresh
    database) it checks every waiting job's lock before sorting: about 30 ms per fetch
    with 3,000 waiting jobs on 200 locks, against 0.1 ms with current statistics, which
    caps a worker pair at about 100 jobs/s, PostgreSQL-bound. Autovacuum analyzes the
    table only every ``autovacuum_naptime`` (a minute by default). ``SKIP_LOCKED``: when
    another worker is analyzing it already, this one does not wait. One statement to read
    the counters (two catalog rows) per call; the ANALYZE (a few ms on such a table) only
    on growth.

    Raises:
        procrastinate.exceptions.ConnectorException: the database failed.
    """
    row = await proc.connector.execute_query_one_async(_STATS_LAG)
    if row["live"] <= grown * row["planned"] + slack:
        return False
    await proc.connector.execute_query_async("analyze (skip_locked) procrastinate_jobs")
    return True


async def serve_worker(
    settings: Any, *, concurrency: int = 20, name: str | None = None, outlets: Mapping[str, Any] | None = None
) -> None:
    """Run one ``baton worker`` until SIGINT/SIGTERM (procrastinate stops it; unfinished
    runs stay ``running`` and resume on another worker).

    Args:
        outlets: platform → outlet the worker posts through (results, status edits); the
            adapters build them (:func:`adapters.launch.worker`); default: none.

    Raises:
        ValueError: the database is not PostgreSQL.
    """
    from bot.app import App

    url = settings.db_url
    conninfo(url)  # fails early for SQLite
    # a worker routes no chat: no encoder loaded, no route examples embedded (a replacement for
    # a dead worker is up in a second or two)
    settings = settings.model_copy(
        update={"queue": settings.queue.model_copy(update={"mode": "workers"}), "routing": settings.routing.model_copy(update={"enabled": False})}
    )
    app = await App.start(settings, dict(outlets or {}), migrate=False)
    scale = app.bot.queue
    assert isinstance(scale, ScaleOut)
    worker = RunWorker(app, settings.queue, name)
    scale.size_pool(8)  # LISTEN, fetching and finishing jobs, procrastinate's heartbeat, the reaper
    proc = scale.app
    try:
        await scale.open()
        reaper = app.tasks.start(worker.reap(proc, scale), name="baton-reaper")
        beat = app.tasks.start(worker.heartbeat(), name="baton-heartbeat")
        try:
            await proc.run_worker_async(
                queues=[QUEUE],
                concurrency=concurrency,
                name=worker.name,
                additional_context={"baton": worker},
                fetch_job_polling_interval=settings.queue.poll_interval,
                update_heartbeat_interval=settings.queue.heartbeat,
                stalled_worker_timeout=settings.queue.stalled_after,
                delete_jobs="successful",
                shutdown_graceful_timeout=None,  # SIGTERM: finish the runs in hand (a SIGKILL leaves them to the reaper)
            )
        finally:
            reaper.cancel()
            beat.cancel()
            await asyncio.gather(reaper, beat, return_exceptions=True)
            await asyncio.shield(worker.aclose())
    finally:
        await asyncio.shield(app.aclose())


__all__ = ["QUEUE", "RunWorker", "ScaleOut", "apply_schema", "conninfo", "make_app", "refresh_queue_stats", "request_cancel", "serve_worker", "thread_lock"]
