"""Optional outlet abilities are declared (bot.core.Ability), and the core uses them only when declared."""

from __future__ import annotations

import pytest

from adapters._slack_outlet import SlackOutlet
from adapters.console import ConsoleOutlet
from adapters.discord_adapter import DiscordOutlet
from bot.core import Ability, SessionKey, has_ability, reply_stream, send_run_result
from tests.conftest import RecordingOutlet

KEY = SessionKey("test", "c", "t")


def test_platform_outlets_declare_what_they_implement() -> None:
    for cls, want in [
        (ConsoleOutlet, {Ability.STREAM_REPLY, Ability.FILES}),
        (SlackOutlet, {Ability.STREAM_REPLY, Ability.CHOICES, Ability.FILES}),
        (DiscordOutlet, {Ability.STREAM_REPLY, Ability.RESULT_CONTROLS, Ability.CHOICES, Ability.FILES}),
    ]:
        assert set(cls.abilities) == want, cls
        if Ability.STREAM_REPLY in want:
            assert callable(getattr(cls, "stream_reply"))
        if Ability.RESULT_CONTROLS in want:
            assert callable(getattr(cls, "send_run_result"))
        if Ability.CHOICES in want:
            assert callable(getattr(cls, "send_choices"))
        if Ability.FILES in want:
            assert callable(getattr(cls, "send_file"))


class _StreamingButUndeclared(RecordingOutlet):
    """Has the method but does not declare the ability: the core must not use it."""

    def stream_reply(self, key):  # type: ignore[no-untyped-def]
        raise AssertionError("an undeclared ability was used")

    async def send_run_result(self, key, text, run_id, status):  # type: ignore[no-untyped-def]
        raise AssertionError("an undeclared ability was used")


class _WithControls(RecordingOutlet):
    abilities = frozenset({Ability.RESULT_CONTROLS})

    def __init__(self) -> None:
        super().__init__()
        self.results: list[tuple[int, str]] = []

    async def send_run_result(self, key, text, run_id, status):  # type: ignore[no-untyped-def]
        self.results.append((run_id, status))


async def test_undeclared_abilities_are_not_probed() -> None:
    outlet = _StreamingButUndeclared()
    assert not has_ability(outlet, Ability.STREAM_REPLY)
    assert reply_stream(outlet, KEY) is None
    await send_run_result(outlet, KEY, "Run #1 failed", 1, "failed")
    assert outlet.texts == ["Run #1 failed"]


async def test_declared_result_controls_are_used() -> None:
    outlet = _WithControls()
    await send_run_result(outlet, KEY, "Run #2 failed", 2, "failed")
    assert outlet.results == [(2, "failed")] and outlet.sent == []


@pytest.mark.parametrize("ability", list(Ability))
def test_abilities_have_stable_names(ability: Ability) -> None:
    assert Ability(ability.value) is ability
