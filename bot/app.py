"""Wiring: settings → database → stores → catalogue → executor → run manager → bot."""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass
from typing import Any

from bot.core import Outlet
from bot.approvals import ApprovalBroker
from bot.chat import Chat
from bot.compiler import WorkflowCompiler
from bot.llm import LLM
from bot.memory import Memory
from bot.queue import Admission
from bot.queue.local import LocalWorker
from bot.retention import Retention
from bot.routing import EmbeddingConfig, Param, Router, RouterConfig, load_routes, params_from_inputs, run_threshold_of
from bot.routing.config import RouteConfigError
from bot.runs import RunManager
from bot.scheduling import SchedulerService
from bot.sessions import TokenCounter
from bot.settings import ConfigError, Settings
from bot.gcquiet import QuietCollector
from bot.tasks import TaskOwner
from bot.store import Database, RunStore, SessionStore, upgrade
from bot.store.audit import AuditStore
from bot.store.budget import RunBudget
from bot.store.cache import SqlStepCache
from bot.turn import Bot
from engine.actions import ActionRunner
from engine.catalog import Catalog
from engine.children import ChildRegistry
from engine.errors import DefinitionError, EngineError
from engine.definitions import load_definitions
from engine.parse import compile_text, prepare_parser
from engine.run import Executor

log = logging.getLogger("baton")


def build_catalog(settings: Settings) -> Catalog:
    """The catalogue from ``config/workflows`` and ``[actions]``.

    Raises:
        ConfigError: an invalid workflow file or action (the file and node, and the fix).
    """
    try:
        return _build_catalog(settings)
    except DefinitionError as e:
        raise ConfigError(settings.workflows_dir, "", str(e), "correct that workflow file or [actions] entry; `baton workflow list` checks them all") from None


def _build_catalog(settings: Settings) -> Catalog:
    actions = {}
    allow = tuple(settings.shell.allow)
    cat = Catalog(workflows=load_definitions(settings.workflows_dir), shell_allow=allow, providers=tuple(settings.providers))
    for name, a in settings.actions.items():
        if a.kind == "shell":
            args = cat.action_args("shell", {"argv": a.argv, "timeout": a.timeout}, f"[actions.{name}]")
        else:
            args = cat.action_args("http", {"url": a.url, "method": a.method, "expect_status": a.expect_status, "timeout": a.timeout}, f"[actions.{name}]")
        args["idempotent"] = a.idempotent if a.idempotent is not None else a.kind == "http"
        args["description"] = a.description
        actions[name] = (a.kind, args)
    cat.actions = actions
    prepare_parser()  # the grammar file is read here, at start-up, not by the first chat parse
    # compile every workflow now so a broken file fails at start, not mid-conversation
    for name in cat.workflows:
        cat.graph_for(name, stack=(name,))
    return cat


def workflow_declarations(catalog: Catalog) -> tuple[dict[str, str], dict[str, tuple[Param, ...]]]:
    """What the catalog's workflows declare for routing: ``effect`` (``read-only`` /
    ``changes``; ``read_only: true`` also counts) and ``inputs`` (their parameters)."""
    effects: dict[str, str] = {}
    params: dict[str, tuple[Param, ...]] = {}
    for name, d in catalog.workflows.items():
        spec = getattr(d, "spec", None) or {}
        effect = spec.get("effect") or getattr(d, "effect", None)
        if effect is None and isinstance(spec.get("read_only"), bool):
            effect = "read-only" if spec["read_only"] else "changes"
        if effect in ("read-only", "changes"):
            effects[name] = effect
        inputs = getattr(d, "inputs", None) or spec.get("inputs")
        if inputs:
            params[name] = params_from_inputs(inputs)
    return effects, params


async def build_router(settings: Settings, catalog: Catalog, llm: LLM | None) -> Router | None:
    """The router from ``config/routes.yaml`` (``None`` when routing is off or there is no file).

    Raises:
        ConfigError: an invalid routes file, or a route whose target is not a workflow
            (the file, the route and the fix).
        EncoderUnavailable: an encoder named explicitly is not installed.
    """
    rs = settings.routing
    path = settings.config_dir / "routes.yaml"
    if not rs.enabled or not path.is_file():
        return None
    try:
        routes = load_routes(path)
    except RouteConfigError as e:
        problem = str(e).replace(str(path), "").lstrip(": ")
        raise ConfigError(path, "routes", problem, "correct it against the schema in bot/routing/config.py (keys shown above)") from None
    for r in routes:  # a route naming an unknown workflow fails at start, not mid-conversation
        if r.workflow is not None:
            try:
                compile_text(r.workflow, catalog)
            except EngineError as e:
                raise ConfigError(
                    path, f"route '{r.name}' target", str(e), "name a workflow from config/workflows (see `baton workflow list`) or an action"
                ) from None
    encoder = None if rs.encoder == "none" else rs.encoder
    effects, params = workflow_declarations(catalog)
    try:
        run_t = run_threshold_of(path)
        router = Router(
            routes,
            encoder=encoder,
            cache_dir=settings.data_dir / "routing-cache",
            classify=llm.classify if (llm is not None and rs.llm) else None,
            config=RouterConfig(commands=False, embedding=EmbeddingConfig(run_threshold=run_t)),
            extra_names=catalog.names(),
            effects=effects,
            workflow_params=params,
        )
    except RouteConfigError as e:
        raise ConfigError(path, "routes", str(e).replace(str(path), "").lstrip(": "), "correct it against the schema in bot/routing/config.py") from None
    await router.prepare()
    return router


@dataclass
class App:
    """A running Baton: everything an adapter needs. Close with :meth:`aclose`."""

    settings: Settings
    db: Database
    sessions: SessionStore
    runs: RunStore
    catalog: Catalog
    manager: RunManager
    bot: Bot
    memory: Memory
    retention: Retention
    llm: LLM | None
    scheduler: SchedulerService | None
    tasks: TaskOwner
    """The owner of the app's long-lived background tasks (cancelled and awaited by :meth:`aclose`)."""
    admission: Admission | None = None
    """The one entry point that turns requests into queued runs (:mod:`bot.queue.admission`)."""
    collector: QuietCollector | None = None
    """Runs full garbage collections in quiet moments of admission (:mod:`bot.gcquiet`)."""

    @classmethod
    async def start(
        cls,
        settings: Settings,
        outlets: dict[str, Outlet],
        *,
        migrate: bool | None = None,
        scheduler_clock: Any = None,
        scheduler_options: dict[str, Any] | None = None,
    ) -> App:
        """Open the database (migrating SQLite at start), load workflows, build the bot.

        At the end the start-up heap is frozen (:func:`gc.freeze`, undone by :meth:`aclose`).

        Args:
            outlets: platform → outlet of each adapter this process serves.
            migrate: apply migrations now; default: yes for SQLite (the embedded
                default), no for other databases (run ``baton db upgrade``).
            scheduler_clock, scheduler_options: the scheduler's clock (tests pass a
                controlled one) and options overriding ``[scheduling]``.
        """
        url = settings.db_url
        if migrate if migrate is not None else url.startswith("sqlite"):
            await upgrade(url)
        catalog = build_catalog(settings)
        counter = await asyncio.to_thread(TokenCounter)  # may try a download first; never on the loop
        db = await asyncio.to_thread(Database, url)  # opening a SQLite file blocks: not on the loop
        sessions = SessionStore(db, counter)
        try:
            memory = Memory(
                sessions, counter, settings.sessions, channels=settings.session_channels, system_prompt=settings.system_prompt
            )
        except ValueError as e:  # ContextBudgetError too
            raise ConfigError(
                settings.config_dir / "baton.toml",
                "[sessions]",
                str(e),
                "strategy is sliding_window, summary or hierarchical; reserve_tokens must leave room under max_tokens",
            ) from None
        runs = RunStore(db)
        wf = settings.workflow
        approvals = ApprovalBroker(settings.permissions.get("approve", ["*"]), db=db)  # decisions reach runs of other processes
        cc = wf.cost_control
        llm = LLM.from_settings(
            settings.providers,
            counter,
            max_tokens=wf.llm_max_tokens,
            max_cost_per_workflow=cc.max_cost_per_workflow,
            budget_alert_threshold=cc.budget_alert_threshold,
            ledger=RunBudget(db),  # the spend is the run's, in the database (bot.store.budget)
        )
        if llm is not None:
            catalog.providers = tuple(llm.names)
            memory.summarize = llm.summarize
            for problem in llm.registry.problems():
                log.warning("LLM provider: %s", problem)
        children = ChildRegistry(settings.data_dir / "children")
        actions = ActionRunner(
            shell_allow=tuple(settings.shell.allow),
            output_limit=wf.output_limit,
            approvals=approvals,
            llm=llm,
            step_providers={k: v.preferred_providers for k, v in wf.steps.items() if v.preferred_providers},
            children=children,
        )
        executor = Executor(
            actions,
            runs,
            fail_fast=wf.fail_fast,
            default_timeout_s=wf.step_timeout,
            retry_initial_s=wf.retry_initial,
            retry_max_s=wf.retry_max,
            max_parallel_steps=wf.max_parallel_steps,
            default_retries=wf.max_retries,
            cache=SqlStepCache(db),
        )
        manager = RunManager(runs, sessions, executor, outlets, children=children)
        if llm is not None:
            llm.alert = manager.tell_run
        router = await build_router(settings, catalog, llm)
        compiler = WorkflowCompiler(catalog)
        sc = settings.scheduling
        options: dict[str, Any] = {
            "default_tz": sc.timezone,
            "min_interval_s": sc.min_interval,
            "misfire_grace_s": int(sc.misfire_grace),
            "overlap": sc.overlap,
            **(scheduler_options or {}),
        }
        tasks = TaskOwner("app", logger=log)  # also owns the bot's per-thread lanes and the scheduler's tasks
        scheduler = SchedulerService(db, sessions, manager, compiler.compile, clock=scheduler_clock, tasks=tasks, **options)
        bot = Bot(
            settings, sessions, runs, manager, catalog,
            memory=memory, approvals=approvals, chat=Chat(llm, memory, sessions), router=router,
            scheduler=scheduler, compiler=compiler, audit=AuditStore(db), tasks=tasks,
        )  # fmt: skip
        queue: Any
        if settings.queue.mode == "workers":  # runs go to `baton worker` processes (PostgreSQL, README "Scale out")
            from bot.queue.scale import ScaleOut

            queue = ScaleOut(url, runs, sessions, tasks=tasks)
            bot.admission = Admission(settings, sessions, runs, on_queued=queue.enqueue)
        else:
            bot.admission = Admission(settings, sessions, runs)
            queue = LocalWorker(manager, runs, sessions, policy=wf.busy_policy, priority=bot.admission.priority, tasks=tasks)
            executor.before_step = bot.admission.priority.turn  # steps of running runs yield to admissions too
        manager.queue = bot.queue = queue
        scheduler.use_admission(bot.admission, queue, bot.audit)  # firings are admitted like chat requests
        retention = Retention(db, sessions, memory, settings.retention)
        app = cls(
            settings, db, sessions, runs, catalog, manager, bot, memory, retention, llm, scheduler, tasks,
            admission=bot.admission,
        )  # fmt: skip
        app.tasks.start(retention.loop(), name="baton-retention")
        if settings.webhooks:  # runs of any process write their webhook events to the outbox (baton serve delivers)
            from bot.server.events import install as install_run_hook

            install_run_hook(app)
        await scheduler.start()
        gc.collect()  # see aclose(): what start-up built is never garbage; full collections skip it
        gc.freeze()
        # full collections of what was made since: in quiet moments of admission, not mid-burst
        app.collector = QuietCollector(bot.admission.priority)
        app.collector.install()
        app.tasks.start(app.collector.run(), name="baton-gc")
        return app

    def outlet_for(self, platform: str) -> Outlet | None:
        """The outlet registered for ``platform`` (``None`` when none is)."""
        return self.manager.outlets.get(platform)

    def add_outlet(self, outlet: Outlet) -> None:
        """Register an adapter's outlet after start (results of its platform's runs go there,
        and its platform's schedules are loaded)."""
        self.manager.outlets[outlet.platform] = outlet
        if self.scheduler is not None:
            self.tasks.start(self.scheduler.add_platform(outlet.platform), name=f"schedules-{outlet.platform}")

    async def aclose(self) -> None:
        """Stop schedules and runs (they stay resumable), flush checkpoints, close the database.

        The process-wide garbage collector settings made by :meth:`start` are put back even
        when a step of closing fails or is cancelled."""
        try:
            if self.scheduler is not None:
                await self.scheduler.aclose()
            await self.tasks.aclose()
            await self.bot.aclose()
            if self.bot.queue is not None:
                await self.bot.queue.aclose()
            await self.memory.aclose()
            await self.manager.shutdown()
            await self.runs.aclose()
            if self.llm is not None:
                await self.llm.aclose()
            await self.db.dispose()
        finally:
            if self.collector is not None:
                self.collector.uninstall()
            # start() froze the heap it built (gc.freeze): a full collection walking those long-lived
            # objects stopped the event loop for ~100 ms several times a second under a burst of
            # Slack events (acks p99 372 ms -> 96 ms with it); once closed they may be garbage
            gc.unfreeze()
