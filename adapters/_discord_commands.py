"""Discord application commands: ``/run``, ``/flow``, ``/schedule``, ``/workflows``, ``/runs``.

Interactions are acknowledged at once with a deferred response and answered by
follow-ups (Discord fails any interaction not answered within 3 seconds). A start
is checked by the core's :meth:`~bot.core.CoreAPI.preflight` *before* deferring, so
a refusal is shown to its author only.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from adapters._discord_outlet import _RESPONDER, _Responder
from adapters._discord_settings import NO_MENTIONS, PLATFORM
from adapters._discord_text import NameIndex, choice_label, escape_inline, thread_name
from bot import texts
from bot.core import CoreAPI, ThreadKey
from engine.catalog import close_names

if TYPE_CHECKING:
    from adapters.discord_adapter import BatonDiscordClient

log = logging.getLogger("baton.discord")

__all__ = ["CommandsMixin", "define_commands"]


class CommandsMixin:
    """The slash-command handlers of :class:`~adapters.discord_adapter.BatonDiscordClient`.

    Uses the client's ``core`` (:class:`~bot.core.CoreAPI`), ``outlet``, ``settings``,
    ``threads`` and its helpers (``_private``, ``baton_message``, ``key_for``).
    """

    core: CoreAPI
    threads: dict[int, int]
    _index: NameIndex | None

    # -- autocomplete ------------------------------------------------------------

    def workflow_choices(self, current: str) -> list[app_commands.Choice[str]]:
        """Autocomplete choices for ``/run workflow:`` (:meth:`NameIndex.rank`, at most 25), from memory.

        Autocomplete cannot be deferred, so this does no I/O; the index is rebuilt
        only when the catalogue's names change.
        """
        described = dict(self.core.workflow_names())
        names = list(described)
        if self._index is None or self._index.names != names:
            self._index = NameIndex(names)
        return [app_commands.Choice(name=choice_label(n, described[n]), value=n[:100]) for n in self._index.rank(current)]

    # -- commands ----------------------------------------------------------------

    async def command_run(self, interaction: discord.Interaction, workflow: str) -> None:
        """``/run workflow:NAME``: check, defer, open a thread, hand ``/run NAME`` to the core."""
        name = workflow.strip()
        known = [n for n, _ in self.core.workflow_names()]
        if name not in known:
            await self._private(interaction, texts.unknown_named_workflow(name, close_names(name, known)))
            return
        await self._start(interaction, f"/run {name}", name, name)

    async def command_flow(self, interaction: discord.Interaction, text: str) -> None:
        """``/flow text:…``: like ``/run`` for workflow text (``run: TEXT`` to the core)."""
        text = text.strip()
        if not text:
            await self._private(interaction, texts.run_what("/flow text: disk-check AND system-report"))
            return
        await self._start(interaction, f"run: {text}", text, text)

    async def _start(self, interaction: discord.Interaction, text: str, source: str, title: str) -> None:
        """Start work: the core's preflight (compile, permission) runs *before* deferring, so refusals are ephemeral.

        The preflight is in memory for workflow text (about a millisecond), so the
        deferral still goes out at once (Discord's 3-second rule); whether the
        answer is ephemeral must be chosen at deferral time.
        """
        draft = self.baton_message(interaction.user, text, self._key_here(interaction), f"interaction:{interaction.id}")
        refusal = await self.core.preflight(draft, text)
        if refusal is not None:
            await self._private(interaction, refusal)
            return
        await interaction.response.defer(thinking=True)
        key = await self._open_session(interaction, title)
        await self.core.handle(dataclasses.replace(draft, channel=key.channel, thread=key.thread), self.outlet)

    async def _open_session(self, interaction: discord.Interaction, title: str) -> ThreadKey:
        """Answer the deferred interaction and pick the session: a new thread from the answer in a text channel."""
        channel = interaction.channel
        cid = int(interaction.channel_id or 0)
        ack = f"▶ **{escape_inline(title if len(title) <= 80 else title[:79] + '…')}** requested by {interaction.user.mention}"
        if isinstance(channel, discord.TextChannel) and cid not in self.threads:
            original = await interaction.edit_original_response(content=f"{ack} — status and result follow in the thread.", allowed_mentions=NO_MENTIONS)
            try:
                thread = await original.create_thread(name=thread_name(title), auto_archive_duration=self.settings.thread_archive_minutes)
            except (discord.HTTPException, ValueError) as e:
                why = f"{e.status} {e.text}" if isinstance(e, discord.HTTPException) else str(e)
                log.warning("discord: opening a thread in %s failed: %s", cid, why)
                await interaction.edit_original_response(
                    content=f"{ack} — I could not open a thread ({why}); status and result follow here.", allowed_mentions=NO_MENTIONS
                )
                return self.key_for(channel, cid)
            self.threads[thread.id] = cid
            return ThreadKey(PLATFORM, str(cid), str(thread.id))
        await interaction.edit_original_response(content=f"{ack} — status and result follow here.", allowed_mentions=NO_MENTIONS)
        return self.key_for(channel, cid)

    async def forward(
        self,
        interaction: discord.Interaction,
        text: str,
        *,
        ephemeral: bool,
        key: ThreadKey | None = None,
        ack: str = "Done.",
    ) -> None:
        """Defer, then hand ``text`` to the core; its reply (if immediate) answers the interaction.

        Replies the core sends for ``key`` while ``bot.handle`` runs (the read-only
        commands answer there) become the interaction's answer; otherwise the
        interaction is answered with ``ack`` and later replies go to the channel.
        """
        if not interaction.response.is_done():
            await interaction.response.defer(ephemeral=ephemeral, thinking=True)
        key = key or self._key_here(interaction)
        msg = self.baton_message(interaction.user, text, key, f"interaction:{interaction.id}")
        responder = _Responder(interaction, key, ephemeral)
        token = _RESPONDER.set(responder)
        try:
            await self.core.handle(msg, self.outlet)
        finally:
            responder.open = False  # before any other task can run
            _RESPONDER.reset(token)
        if not responder.used:
            await interaction.edit_original_response(content=ack, allowed_mentions=NO_MENTIONS)

    async def command_runs(self, interaction: discord.Interaction, everywhere: bool) -> None:
        """``/runs``: this thread's runs (in a session thread), else every run; ephemeral."""
        key = self._key_here(interaction)
        here = key.channel != key.thread and not everywhere
        await self.forward(interaction, "/runs" if here else "/runs all", ephemeral=True)


def define_commands(client: BatonDiscordClient) -> None:
    """Register the slash commands on ``client.tree`` (names and descriptions ≤ 100 chars)."""
    tree = client.tree

    @tree.command(name="run", description="Run a named workflow; status and result follow in a new thread.")
    @app_commands.describe(workflow="the workflow to run (type to search)")
    async def run_cmd(interaction: discord.Interaction, workflow: str) -> None:
        await client._guarded(interaction, "/run", client.command_run(interaction, workflow))

    @run_cmd.autocomplete("workflow")
    async def run_complete(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        return client.workflow_choices(current)

    @tree.command(name="flow", description="Run workflow text, e.g. disk-check AND system-report THEN echo done")
    @app_commands.describe(text="workflow text: A THEN B, A AND B, THEN IF_SUCCESS x ELSE y, ( )")
    async def flow_cmd(interaction: discord.Interaction, text: str) -> None:
        await client._guarded(interaction, "/flow", client.command_flow(interaction, text))

    @tree.command(name="schedule", description="Schedule a workflow (forwarded to Baton as 'schedule …').")
    @app_commands.describe(text="what and when, e.g. disk-check every day at 07:00")
    async def schedule_cmd(interaction: discord.Interaction, text: str) -> None:
        work = client.forward(interaction, f"schedule {text.strip()}", ephemeral=False, ack=f"Forwarded: schedule {text.strip()[:1800]}")
        await client._guarded(interaction, "/schedule", work)

    @tree.command(name="workflows", description="List the named workflows and actions.")
    async def workflows_cmd(interaction: discord.Interaction) -> None:
        await client._guarded(interaction, "/workflows", client.forward(interaction, "/workflows", ephemeral=True))

    @tree.command(name="runs", description="Recent runs in this thread (or everywhere).")
    @app_commands.describe(everywhere="list the runs of every thread")
    async def runs_cmd(interaction: discord.Interaction, everywhere: bool = False) -> None:
        await client._guarded(interaction, "/runs", client.command_runs(interaction, everywhere))
