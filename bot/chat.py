"""Plain chat: the thread's context window, streamed through the default LLM provider.

With no provider configured the bot says what to set. Failures are told in the
thread: a missing key names the setting, an auth error names the provider, a
context-length error says by how much, and a stream cut mid-way keeps the partial
text, marked as cut off. The reply (as shown) is stored in the thread's memory once it
is finished on the platform; the turn ends when it is stored.
"""

from __future__ import annotations

import logging

from bot.core import Message, Outlet, reply_stream
from bot.texts import CHAT_NEEDS_PROVIDER
from bot.llm import LLM
from bot.memory import Memory
from bot.providers import ProviderError, StreamInterrupted
from bot.providers.types import StreamEnd, TextDelta
from bot.store import SessionStore
from bot.store.sessions import COMMAND
from bot.sessions import ContextBudgetError

log = logging.getLogger("baton.chat")

__all__ = ["CHAT_NEEDS_PROVIDER", "Chat"]

class Chat:
    """Answers chat messages.

    Args:
        llm: the providers (``None``: chat explains how to configure one).
        memory: assembles each thread's context window.
        sessions: stores the reply.
    """

    def __init__(self, llm: LLM | None, memory: Memory, sessions: SessionStore) -> None:
        self.llm = llm
        self.memory = memory
        self.sessions = sessions

    async def reply(self, msg: Message, outlet: Outlet, message_id: int = 0, *, tokens: int | None = None) -> str:
        """Answer ``msg`` (already stored with id ``message_id`` and ``tokens`` counted) in its
        thread; returns the text shown."""
        key = msg.key
        if self.llm is None:
            # No LLM to answer, but the thread's memory is kept as configured: building the
            # context plans the summaries the strategy asks for (extractive without an LLM).
            try:
                await self.memory.context(key, msg.text, new_id=message_id, tokens=tokens)
            except ContextBudgetError as e:
                log.warning("no context for %s: %s", key, e)
            # a notice, not conversation: kept out of recall and of later LLM contexts
            await self.sessions.append(key, "assistant", "baton", CHAT_NEEDS_PROVIDER, kind=COMMAND)
            await outlet.send(key, CHAT_NEEDS_PROVIDER)
            return CHAT_NEEDS_PROVIDER
        stream = reply_stream(outlet, key)
        text = ""
        end: StreamEnd | None = None
        try:
            window = await self.memory.context(key, msg.text, new_id=message_id, tokens=tokens)
            async for piece in self.llm.chat(window):
                if isinstance(piece, TextDelta):
                    text += piece.text
                    if stream is not None:
                        stream.update(text)
                else:
                    end = piece
        except StreamInterrupted as e:
            log.warning("chat stream cut in %s: %s", key, e.reason)
            text = f"{e.partial_text}\n…[reply cut off: {e.reason}]"
        except ContextBudgetError as e:
            text = f"I cannot build a context for this: {e}"
        except ProviderError as e:
            log.warning("chat failed in %s: %s", key, e)
            text = f"The LLM provider failed: {e}"
        if not text:
            text = "(the model returned an empty reply)"
        try:  # shown first: the reader should not wait for the database
            if stream is not None:
                await stream.finish(text)
            else:
                await outlet.send(key, text)
        finally:  # then remembered (also when the platform failed to show the end of it)
            await self.sessions.append(key, "assistant", "baton", text)
        if end is not None and self.llm is not None:
            log.info("chat reply in %s: %s tokens in, %s out", key, end.usage.input_tokens, end.usage.output_tokens)
        return text
