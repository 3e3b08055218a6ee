"""Discord buttons: persistent :class:`ActionButton` items and what a click does.

A button's ``custom_id`` (``baton:<action>:<run>[:<step>]``) carries its meaning,
so buttons on old messages work after a restart. A click is handed to
:meth:`ButtonsMixin.on_button`, which looks the action up in :data:`BUTTON_ACTIONS`
and forwards the equivalent chat command to the core as the clicking user.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import discord

from adapters._discord_settings import NO_MENTIONS, member_roles
from bot import texts
from bot.core import CoreAPI, ThreadKey

__all__ = ["ActionButton", "BUTTON_ACTIONS", "ButtonsMixin"]


class ActionButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=r"baton:(?P<action>[a-z]+):(?P<run>[0-9]+)(?::(?P<step>[^\s:]{1,64}))?",
):
    """A persistent button whose ``custom_id`` (``baton:<action>:<run>[:<step>]``, ≤ 100 chars) carries its meaning.

    Persistent through :meth:`discord.Client.add_dynamic_items`, so buttons on old
    messages keep working after a restart. A click is dispatched to
    :meth:`ButtonsMixin.on_button`, which looks the action up in
    :data:`BUTTON_ACTIONS`.
    """

    def __init__(
        self,
        action: str,
        run_id: int,
        step: str | None = None,
        *,
        label: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
    ) -> None:
        custom_id = f"baton:{action}:{run_id}" + (f":{step}" if step else "")
        super().__init__(discord.ui.Button(label=label or action, style=style, custom_id=custom_id))
        self.action = action
        self.run_id = run_id
        self.step = step

    @classmethod
    async def from_custom_id(  # type: ignore[override]
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str], /
    ) -> ActionButton:
        """Rebuild the button from a clicked component's ``custom_id`` (called by discord.py)."""
        return cls(match["action"], int(match["run"]), match["step"], label=item.label, style=item.style)

    async def callback(self, interaction: discord.Interaction) -> None:  # type: ignore[override]
        """A click: hand it to :meth:`ButtonsMixin.on_button` (the Baton client)."""
        client = interaction.client
        if isinstance(client, ButtonsMixin):
            await client.on_button(interaction, self.action, self.run_id, self.step)


class ButtonsMixin:
    """The button handlers of :class:`~adapters.discord_adapter.BatonDiscordClient`.

    Everything a click needs from the core goes through the client's ``core``
    (:class:`~bot.core.CoreAPI`): the run's thread (``run_info``), whether the clicking
    user may do it (``preflight``, ``may_decide``), and the command itself (``handle``).
    """

    core: CoreAPI

    async def on_button(self, interaction: discord.Interaction, action: str, run_id: int, step: str | None) -> None:
        """A click on an :class:`ActionButton`: dispatch through :data:`BUTTON_ACTIONS`."""
        self.adopt_current_task()
        handler = BUTTON_ACTIONS.get(action)
        if handler is None:
            await self._guarded(interaction, f"the {action} button", self._private(interaction, f"The '{action}' button is not supported by this version of Baton."))
            return
        await self._guarded(interaction, f"the {action} button", handler(self, interaction, run_id, step))

    async def button_retry(self, interaction: discord.Interaction, run_id: int, step: str | None) -> None:
        """Retry: ``/rerun ID from STEP`` in the run's own session, as the clicking user (permission-checked)."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        info = await self.core.run_info(run_id)
        if info is None:
            await self._private(interaction, texts.no_run(run_id))
            return
        text = texts.rerun_command(run_id, step)
        msg = self.baton_message(interaction.user, text, info.key, f"interaction:{interaction.id}")
        refusal = await self.core.preflight(msg, text)
        if refusal is not None:
            await self._private(interaction, refusal)
            return
        where = f" from step `{step}`" if step else ""
        await interaction.edit_original_response(content=f"Retrying run #{run_id}{where}; status and result follow in the thread.", allowed_mentions=NO_MENTIONS)
        await self.core.handle(msg, self.outlet)

    async def button_choice(self, interaction: discord.Interaction, run_id: int, step: str | None) -> None:
        """A routing question's reply button: the reply (``yes``, ``2``, ``no``, a value) becomes
        the clicking user's message in this thread; the core checks their permission."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        key = self._key_here(interaction)
        msg = self.baton_message(interaction.user, step or "", key, f"interaction:{interaction.id}")
        await interaction.edit_original_response(content=f"Answered “{step}”.", allowed_mentions=NO_MENTIONS)
        await self.core.handle(msg, self.outlet)

    async def button_approve(self, interaction: discord.Interaction, run_id: int, step: str | None) -> None:
        """Approve: ``/approve ID STEP`` as the clicking user (public answer; a refusal only to them)."""
        await self._decide(interaction, run_id, step, "approve")

    async def button_reject(self, interaction: discord.Interaction, run_id: int, step: str | None) -> None:
        """Reject: ``/reject ID STEP`` as the clicking user (public answer; a refusal only to them)."""
        await self._decide(interaction, run_id, step, "reject")

    async def _decide(self, interaction: discord.Interaction, run_id: int, step: str | None, verb: str) -> None:
        may = self.core.may_decide(str(interaction.user.id), member_roles(interaction.user))
        await interaction.response.defer(ephemeral=not may, thinking=True)
        key = await self._run_key(interaction, run_id)
        text = f"/{verb} {run_id}" + (f" {step}" if step else "")
        await self.forward(interaction, text, ephemeral=not may, key=key)

    async def button_log(self, interaction: discord.Interaction, run_id: int, step: str | None) -> None:
        """Show log: the core's ``/run show ID``, answered to the clicking user only."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        key = await self._run_key(interaction, run_id)
        await self.forward(interaction, f"/run show {run_id}", ephemeral=True, key=key)

    async def _run_key(self, interaction: discord.Interaction, run_id: int) -> ThreadKey:
        """The session of run ``run_id`` (the clicked channel's when the run is unknown)."""
        info = await self.core.run_info(run_id)
        return info.key if info is not None else self._key_here(interaction)


ButtonHandler = Callable[[Any, discord.Interaction, int, "str | None"], Awaitable[None]]

#: Button actions by the ``<action>`` of their ``custom_id`` (``baton:<action>:<run>[:<step>]``).
BUTTON_ACTIONS: dict[str, ButtonHandler] = {
    "retry": ButtonsMixin.button_retry,
    "log": ButtonsMixin.button_log,
    "approve": ButtonsMixin.button_approve,
    "reject": ButtonsMixin.button_reject,
    "choice": ButtonsMixin.button_choice,
}
