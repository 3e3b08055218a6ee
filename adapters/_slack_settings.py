"""Slack settings (``BATON_SLACK_*``) and the Web API client they configure."""

from __future__ import annotations

import logging

import aiohttp
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler, AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

_ENV = "BATON_SLACK_"


class SlackConfigError(ValueError):
    """The Slack settings cannot work; the message names the setting (``BATON_SLACK_…``) and where to find it."""


class SlackSettings(BaseSettings):
    """Slack settings from ``BATON_SLACK_*`` environment variables (or init arguments).

    Attributes:
        bot_token: ``xoxb-…`` (OAuth & Permissions → Bot User OAuth Token). Always needed.
        signing_secret: Basic Information → App Credentials → Signing Secret. HTTP mode:
            every request is verified (``v0=HMAC-SHA256(secret, "v0:" + timestamp + ":" + body)``,
            timestamps older than 5 minutes refused; https://docs.slack.dev/authentication/verifying-requests-from-slack).
        app_token: ``xapp-…`` with ``connections:write`` (Basic Information → App-Level Tokens). Socket Mode only.
        api_base_url: Web API base URL override (tests point it at a local fake); default Slack's.
        host, port, path: where the HTTP endpoint listens (Request URL ``https://<public host><path>``).
        command: the slash command's name.
        status_min_interval: seconds between edits of one run's status message (≥ ~1 s per
            message is Slack's guidance for ``chat.update``).
        inline_limit: characters a reply shows inline (≤ 3000, a section's limit); longer
            replies are uploaded as a file in the thread.
        rate_limit_retries: how often a 429 answer is retried after its ``Retry-After`` seconds.
        assistant: register the assistant pane (suggested prompts, "is working…" status).
        shutdown_grace: seconds acked events get to reach the core when serving stops.
    """

    model_config = SettingsConfigDict(env_prefix=_ENV, extra="ignore")

    bot_token: SecretStr | None = None
    signing_secret: SecretStr | None = None
    app_token: SecretStr | None = None
    api_base_url: str | None = None
    host: str = "0.0.0.0"
    port: int = Field(3000, ge=0, le=65535)
    path: str = "/slack/events"
    command: str = "/baton"
    status_min_interval: float = Field(1.0, ge=0.0)
    inline_limit: int = Field(2900, ge=200, le=3000)
    rate_limit_retries: int = Field(3, ge=0)
    assistant: bool = True
    shutdown_grace: float = Field(5.0, ge=0.0)

    def check(self, *, socket_mode: bool = False) -> None:
        """Fail early with every missing or malformed setting named.

        Raises:
            SlackConfigError: e.g. ``BATON_SLACK_SIGNING_SECRET is not set (…)``.
        """
        problems = []
        if not _secret(self.bot_token):
            problems.append(f"{_ENV}BOT_TOKEN is not set (OAuth & Permissions → Bot User OAuth Token, xoxb-…)")
        elif not _secret(self.bot_token).startswith("xoxb-"):
            problems.append(f"{_ENV}BOT_TOKEN is not a bot token (it should start with xoxb-)")
        if socket_mode:
            if not _secret(self.app_token):
                problems.append(
                    f"{_ENV}APP_TOKEN is not set (Socket Mode needs an app-level token, xapp-…, "
                    "with connections:write: Basic Information → App-Level Tokens)"
                )
            elif not _secret(self.app_token).startswith("xapp-"):
                problems.append(f"{_ENV}APP_TOKEN is not an app-level token (it should start with xapp-)")
        elif not _secret(self.signing_secret):
            problems.append(f"{_ENV}SIGNING_SECRET is not set (Basic Information → App Credentials → Signing Secret)")
        if not self.path.startswith("/"):
            problems.append(f"{_ENV}PATH must start with / (got {self.path!r})")
        if not self.command.startswith("/"):
            problems.append(f"{_ENV}COMMAND must start with / (got {self.command!r})")
        if problems:
            raise SlackConfigError("Slack settings: " + "; ".join(problems))


def _secret(value: SecretStr | None) -> str:
    return value.get_secret_value() if value is not None else ""


def create_web_client(settings: SlackSettings) -> tuple[AsyncWebClient, aiohttp.ClientSession]:
    """The Web API client: one shared aiohttp session, 429s retried after ``Retry-After``.

    Call it inside the running event loop (the session binds to it). The caller
    closes the session (:meth:`SlackOutlet.aclose` does when given it).
    """
    session = aiohttp.ClientSession()
    base = settings.api_base_url or AsyncWebClient.BASE_URL
    client = AsyncWebClient(
        token=_secret(settings.bot_token) or None,
        base_url=base if base.endswith("/") else base + "/",
        session=session,
        timeout=30,
        logger=logging.getLogger("baton.slack.sdk"),
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=1),
            AsyncRateLimitErrorRetryHandler(max_retry_count=settings.rate_limit_retries),
        ],
    )
    return client, session
