"""The providers' fast streaming path rests on four pieces of the OpenAI and Anthropic SDKs.

Why a fast path at all: the SDKs' ``chat.completions.create(stream=True)`` /
``messages.create(stream=True)`` build one pydantic model per streamed chunk (about
0.5 ms each, see bench/providers.py) and leave async generators to the loop's
finalizer after ``[DONE]``. The providers instead send the same request through the
SDK's documented ``client.post(path, cast_to=..., body=..., stream=True,
stream_cls=...)`` ("Making custom/undocumented requests" in both READMEs), keep events
as dicts, and (OpenAI) subclass ``AsyncStream`` to override its ``__stream__`` hook.

These tests check exactly those pieces, so a new SDK major that changes them fails
here, loudly and by name, instead of deep in a streaming test. When one fails: port
``bot/providers/openai_provider.py`` / ``anthropic_provider.py`` to the SDK's public
streaming API (``client.chat.completions.create(stream=True)`` /
``client.messages.stream(...)``) or adapt the fast path, then update this file.
"""

from __future__ import annotations

import inspect

import anthropic
import openai
import pytest

from bot.providers.openai_provider import _ChunkStream


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
def test_client_post_still_streams_into_a_stream_class(sdk) -> None:  # type: ignore[no-untyped-def]
    params = inspect.signature(sdk.AsyncClient.post).parameters
    missing = {"cast_to", "body", "stream", "stream_cls"} - set(params)
    assert not missing, f"{sdk.__name__} {sdk.__version__}: AsyncClient.post lost {missing}; see this module's doc"


@pytest.mark.parametrize("sdk", [openai, anthropic], ids=["openai", "anthropic"])
def test_async_stream_keeps_its_constructor_and_protocol(sdk) -> None:  # type: ignore[no-untyped-def]
    params = inspect.signature(sdk.AsyncStream.__init__).parameters
    assert {"cast_to", "response", "client"} <= set(params), f"{sdk.__name__} {sdk.__version__}: AsyncStream.__init__ changed"
    for name in ("__stream__", "__anext__", "__aenter__", "__aexit__"):
        assert callable(getattr(sdk.AsyncStream, name, None)), f"{sdk.__name__} {sdk.__version__}: AsyncStream.{name} is gone"
    assert sdk.AsyncStream[object] is not None  # subscriptable, as the Anthropic provider uses it


def test_the_openai_chunk_stream_still_overrides_the_sdk_hook() -> None:
    assert issubclass(_ChunkStream, openai.AsyncStream)
    assert _ChunkStream.__stream__ is not openai.AsyncStream.__stream__
    # the SDK builds its iterator from __stream__ in __init__; if it stops doing so, our override is dead code
    assert "__stream__" in inspect.getsource(openai.AsyncStream.__init__), f"openai {openai.__version__}: AsyncStream no longer uses __stream__"
