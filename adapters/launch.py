"""Starting the core with one adapter: the entry points the ``baton`` CLI looks up.

The core (``bot/``) never imports an adapter; ``bot.cli`` finds these
functions by module name (:data:`bot.cli.LAUNCHER`), the way a plugin entry point
is found, so the dependency points from the adapters to the core only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from bot.app import App
from bot.settings import Settings


async def console(settings: Settings, thread: str | None) -> int:
    """Chat in this terminal until end of input (piped) or Ctrl-D/Ctrl-C (interactive).
    Returns the exit code: 130 when the session ended by an interrupt, else 0."""
    from adapters.console import ConsoleAdapter

    adapter = ConsoleAdapter(thread or settings.console_thread)
    adapter.outlet.files_dir = settings.data_dir / "pictures"  # /run show N graph writes here
    baton = await App.start(settings, {"console": adapter.outlet})
    try:
        await baton.manager.resume_unfinished({"console"})
        return 130 if await adapter.run(baton.bot) else 0
    finally:
        await asyncio.shield(baton.aclose())


async def serve(settings: Settings, adapter: str, *, socket_mode: bool = False) -> None:
    """Serve ``adapter`` (``slack`` or ``discord``) until cancelled.

    Raises:
        SlackConfigError, DiscordConfigError: a missing or rejected token (before anything starts).
    """
    if adapter == "slack":
        from adapters.slack import SlackSettings, serve_slack

        slack = SlackSettings()
        slack.check(socket_mode=socket_mode)  # a missing token fails here, before anything starts
        baton = await App.start(settings, {})
        try:
            await serve_slack(baton, slack, socket_mode=socket_mode)
        finally:
            await asyncio.shield(baton.aclose())
        return
    from adapters.discord_adapter import DiscordOutlet, DiscordSettings, serve_discord

    discord_settings = DiscordSettings()
    discord_settings.require_token()  # a missing token fails here, before anything starts
    baton = await App.start(settings, {"discord": DiscordOutlet(discord_settings)})
    try:
        await serve_discord(baton, discord_settings)
    finally:
        await asyncio.shield(baton.aclose())


@asynccontextmanager
async def worker_outlets(**discord_options: Any) -> AsyncIterator[dict[str, Any]]:
    """The outlets a ``baton worker`` posts through, as the front would (status message edits
    and results): Slack's Web API when ``SLACK_BOT_TOKEN`` is set, Discord's REST API when
    ``BATON_DISCORD_TOKEN`` is (:func:`adapters._discord_outlet.open_rest_outlet`; no
    gateway; ``discord_options`` go to its :class:`discord.Client`). Closed on exit.

    Raises:
        discord.LoginFailure: Discord rejected the token (at start, before any run).
    """
    from adapters.slack import SlackOutlet, SlackSettings

    outlets: dict[str, Any] = {}
    slack = SlackSettings()
    if slack.bot_token is not None:
        outlets["slack"] = SlackOutlet.from_settings(slack)
    async with AsyncExitStack() as stack:
        from adapters._discord_settings import DiscordSettings

        discord_settings = DiscordSettings()
        if discord_settings.token is not None and discord_settings.token.get_secret_value().strip():
            from adapters._discord_outlet import open_rest_outlet

            outlet, close = await open_rest_outlet(discord_settings, **discord_options)
            stack.push_async_callback(close)
            outlets["discord"] = outlet
        yield outlets


async def worker(settings: Settings, *, concurrency: int = 20, name: str | None = None) -> None:
    """``baton worker``: execute queued runs (:func:`bot.queue.scale.serve_worker`) with the
    platform outlets of :func:`worker_outlets`."""
    from bot.queue.scale import serve_worker

    async with worker_outlets() as outlets:
        await serve_worker(settings, concurrency=concurrency, name=name, outlets=outlets)
