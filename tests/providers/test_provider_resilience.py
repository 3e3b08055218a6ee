"""Retries (Retry-After), the circuit breaker, fallback, and streams cut mid-way."""

from __future__ import annotations

import asyncio
import time

import pytest

from bot.providers import (
    AllProvidersFailed,
    ChatMessage,
    CircuitBreaker,
    FallbackChain,
    ProviderConnectionError,
    ProviderServerError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    RetryPolicy,
    StreamEnd,
    StreamInterrupted,
    TextDelta,
)
from tests.fakes.llm_server import FakeLLMServer
from tests.fakes.timing import FakeClock, RecordingSleep

HI = [ChatMessage("user", "status of the deploy?")]


# --------------------------------------------------------------------------- Retry-After
async def test_429_retry_after_is_honoured_then_succeeds(
    llm_server: FakeLLMServer, make_provider, recording_sleep: RecordingSleep
) -> None:
    llm_server.reply = "Deploy is green."
    llm_server.rate_limit(retry_after=1)  # "Retry-After: 1" (seconds)
    provider = make_provider(sleep=recording_sleep)

    reply = await provider.complete(HI)

    assert reply.text == "Deploy is green."
    assert recording_sleep.calls == [1.0]  # exactly the server's value, not our backoff
    assert [r.status for r in llm_server.requests] == [429, 200]
    assert provider.breaker.consecutive_failures == 0


async def test_retry_after_waits_in_real_time(llm_server: FakeLLMServer, make_provider) -> None:
    """Wall clock: the second request reaches the server no sooner than Retry-After (0.25 s) later."""
    llm_server.rate_limit(retry_after="0.25")
    provider = make_provider()  # real asyncio.sleep
    started = time.perf_counter()
    await provider.complete(HI)
    elapsed = time.perf_counter() - started
    first, second = llm_server.requests
    assert second.received_at - first.received_at >= 0.25
    assert elapsed < 2.0


async def test_retry_after_ms_header_is_preferred(
    llm_server: FakeLLMServer, make_provider, recording_sleep: RecordingSleep
) -> None:
    llm_server.rate_limit(retry_after=5, retry_after_ms=150)
    await make_provider(sleep=recording_sleep).complete(HI)
    assert recording_sleep.calls == [0.15]


async def test_retry_after_beyond_cap_gives_up_immediately(
    llm_server: FakeLLMServer, make_provider, recording_sleep: RecordingSleep
) -> None:
    llm_server.rate_limit(retry_after=120)
    provider = make_provider(sleep=recording_sleep, retry=RetryPolicy(max_retries=3, max_retry_after_s=30))
    with pytest.raises(RateLimited) as info:
        await provider.complete(HI)
    assert info.value.retry_after_s == 120
    assert recording_sleep.calls == []
    assert len(llm_server.requests) == 1


async def test_5xx_uses_exponential_backoff_and_a_single_retry_layer(
    llm_server: FakeLLMServer, make_provider, recording_sleep: RecordingSleep
) -> None:
    """max_retries=3 → exactly 4 HTTP requests: the SDKs' own retries are off (max_retries=0)."""
    llm_server.server_error(times=10)
    provider = make_provider(
        sleep=recording_sleep,
        retry=RetryPolicy(max_retries=3, backoff_initial_s=0.5, backoff_max_s=1.5, jitter=False),
    )
    with pytest.raises(ProviderServerError) as info:
        await provider.complete(HI)
    assert info.value.status_code == 500
    assert len(llm_server.requests) == 4
    assert recording_sleep.calls == [0.5, 1.0, 1.5]


async def test_overloaded_529_and_503_are_retried(llm_server: FakeLLMServer, make_provider) -> None:
    llm_server.server_error(status=529)
    llm_server.server_error(status=503)
    reply = await make_provider().complete(HI)
    assert reply.text and [r.status for r in llm_server.requests] == [529, 503, 200]


async def test_in_stream_error_before_first_token_is_retried(llm_server: FakeLLMServer, make_provider) -> None:
    llm_server.reply = "all good"
    llm_server.stream_error(after_chunks=0)
    reply = await make_provider().complete(HI)
    assert reply.text == "all good"
    assert [r.outcome for r in llm_server.requests] == ["stream_error", "ok"]


async def test_read_timeout_is_retried_then_reported(llm_server: FakeLLMServer, make_provider) -> None:
    llm_server.stall(1.0, times=5)
    provider = make_provider(timeout_s=0.2, retry=RetryPolicy(max_retries=1, backoff_initial_s=0.01, jitter=False))
    with pytest.raises(ProviderTimeout, match="primary|claude"):
        await provider.complete(HI)
    assert len(llm_server.requests) == 2


async def test_connection_refused_is_a_connection_error(make_provider) -> None:
    async with FakeLLMServer() as server:
        closed = server.url  # nothing listens here any more
    kind = make_provider().kind
    provider = make_provider(base_url=closed + "/v1" if kind == "openai" else closed)
    with pytest.raises(ProviderConnectionError, match="could not connect"):
        await provider.complete(HI)


# --------------------------------------------------------------------------- stream cut
@pytest.mark.parametrize("mode", ["abort", "eof"])
async def test_cut_mid_stream_raises_stream_interrupted_with_partial_text(
    llm_server: FakeLLMServer, make_provider, mode: str
) -> None:
    llm_server.reply = "Step one done. Step two running. Step three pending."
    llm_server.cut_stream(after_chunks=4, mode=mode)  # type: ignore[arg-type]
    provider = make_provider()

    seen: list[str] = []
    with pytest.raises(StreamInterrupted) as info:
        async for event in provider.stream(HI):
            if isinstance(event, TextDelta):
                seen.append(event.text)
    err = info.value
    assert err.partial_text == "Step one done. Step " == "".join(seen)
    assert err.provider == provider.name
    assert isinstance(err.cause, ProviderConnectionError) and err.__cause__ is err.cause
    assert len(llm_server.requests) == 1  # never retried once text was shown
    assert provider.breaker.consecutive_failures == 1


async def test_cut_after_all_text_but_before_final_event_is_still_interrupted(
    llm_server: FakeLLMServer, make_provider
) -> None:
    llm_server.reply = "complete text"
    llm_server.cut_stream(after_chunks=99, mode="eof")  # all tokens, then no finish/message_delta
    with pytest.raises(StreamInterrupted) as info:
        await make_provider().complete(HI)
    assert info.value.partial_text == "complete text"


async def test_cut_before_first_token_is_retried_transparently(llm_server: FakeLLMServer, make_provider) -> None:
    llm_server.reply = "fresh answer"
    llm_server.cut_stream(after_chunks=0, mode="abort")
    events = [e async for e in make_provider().stream(HI)]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "fresh answer"
    assert isinstance(events[-1], StreamEnd)
    assert len(llm_server.requests) == 2


# --------------------------------------------------------------------------- breaker
def test_breaker_opens_after_threshold_and_probes_after_cooldown(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=clock, name="p")
    for _ in range(2):
        breaker.acquire().failure("boom")
    assert breaker.state == "closed"
    breaker.acquire().failure("boom")
    assert breaker.state == "open"
    with pytest.raises(ProviderUnavailable) as info:
        breaker.acquire()
    assert info.value.retry_in_s == pytest.approx(10)
    assert "3 consecutive failures" in str(info.value) and "boom" in str(info.value)

    clock.advance(9.9)
    with pytest.raises(ProviderUnavailable):
        breaker.acquire()
    clock.advance(0.1)
    assert breaker.state == "half_open"
    probe = breaker.acquire()
    assert probe.is_probe
    with pytest.raises(ProviderUnavailable, match="probe"):
        breaker.acquire()  # only one probe at a time
    probe.failure("still down")
    assert breaker.state == "open"  # re-opened for another cool-down
    clock.advance(10)
    breaker.acquire().success()
    assert breaker.state == "closed" and breaker.consecutive_failures == 0


def test_breaker_released_probe_allows_another(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1, clock=clock)
    breaker.acquire().failure()
    clock.advance(1)
    breaker.acquire().release()  # e.g. the probe call was cancelled
    assert breaker.acquire().is_probe


def test_success_resets_consecutive_count(clock: FakeClock) -> None:
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=1, clock=clock)
    for _ in range(2):
        breaker.acquire().failure()
    breaker.acquire().success()
    for _ in range(2):
        breaker.acquire().failure()
    assert breaker.state == "closed"


async def test_five_500s_open_the_breaker_and_fallback_answers(
    llm_server: FakeLLMServer, make_openai, make_anthropic, clock: FakeClock
) -> None:
    llm_server.server_error(times=5, api="openai")
    llm_server.reply = "answer from the fallback"
    primary = make_openai(
        breaker=CircuitBreaker(failure_threshold=5, cooldown_s=30, clock=clock, name="primary"),
        retry=RetryPolicy(max_retries=4, backoff_initial_s=0.001, jitter=False),
    )
    fallback = make_anthropic(name="cheap")
    chain = FallbackChain([primary, fallback])

    reply = await chain.complete(HI)

    assert reply.text == "answer from the fallback"
    assert reply.provider == "cheap"
    assert primary.breaker.state == "open"
    assert [r.status for r in llm_server.requests_for("openai")] == [500] * 5

    # While open, the primary fails fast without touching the network.
    with pytest.raises(ProviderUnavailable) as info:
        await primary.complete(HI)
    assert "circuit open after 5 consecutive failures" in str(info.value)
    assert len(llm_server.requests_for("openai")) == 5
    reply = await chain.complete(HI)
    assert reply.provider == "cheap"
    assert len(llm_server.requests_for("openai")) == 5

    # After the cool-down a single probe goes through; the server has recovered.
    clock.advance(30)
    reply = await chain.complete(HI)
    assert reply.provider == "primary"
    assert primary.breaker.state == "closed"


async def test_breaker_counts_failures_across_calls(
    llm_server: FakeLLMServer, make_provider, clock: FakeClock
) -> None:
    llm_server.server_error(times=5)
    provider = make_provider(
        breaker=CircuitBreaker(failure_threshold=5, cooldown_s=30, clock=clock, name="x"),
        retry=RetryPolicy(max_retries=2, backoff_initial_s=0.001, jitter=False),
    )
    with pytest.raises(ProviderServerError):
        await provider.complete(HI)  # 3 failed attempts
    with pytest.raises(ProviderUnavailable):
        await provider.complete(HI)  # 2 more open it, the 3rd attempt is refused
    assert len(llm_server.requests) == 5


async def test_auth_and_bad_request_do_not_trip_the_breaker(
    llm_server: FakeLLMServer, make_provider, clock: FakeClock
) -> None:
    from bot.providers import ProviderAuthError

    llm_server.auth_error(times=3)
    provider = make_provider(breaker=CircuitBreaker(failure_threshold=2, cooldown_s=30, clock=clock))
    for _ in range(3):
        with pytest.raises(ProviderAuthError):
            await provider.complete(HI)
    assert provider.breaker.state == "closed"
    assert len(llm_server.requests) == 3  # 401 is never retried


# --------------------------------------------------------------------------- fallback
async def test_fallback_does_not_switch_after_text_was_streamed(
    llm_server: FakeLLMServer, make_openai, make_anthropic
) -> None:
    llm_server.reply = "partial answer that will be cut"
    llm_server.cut_stream(after_chunks=2, api="openai")
    chain = FallbackChain([make_openai(), make_anthropic(name="cheap")])
    with pytest.raises(StreamInterrupted) as info:
        await chain.complete(HI)
    assert info.value.partial_text == "partial answer "
    assert llm_server.requests_for("anthropic") == []


async def test_all_providers_failing_lists_each(llm_server: FakeLLMServer, make_openai, make_anthropic) -> None:
    llm_server.server_error(times=100)
    fast = RetryPolicy(max_retries=0)
    chain = FallbackChain([make_openai(retry=fast), make_anthropic(name="cheap", retry=fast)])
    with pytest.raises(AllProvidersFailed) as info:
        await chain.complete(HI)
    assert [name for name, _ in info.value.failures] == ["primary", "cheap"]
    assert "primary" in str(info.value) and "cheap" in str(info.value)


# --------------------------------------------------------------------------- cancellation
async def test_cancel_during_retry_sleep_propagates(llm_server: FakeLLMServer, make_provider, clock: FakeClock) -> None:
    llm_server.rate_limit(retry_after=30)
    provider = make_provider(
        retry=RetryPolicy(max_retries=1, max_retry_after_s=60),
        breaker=CircuitBreaker(failure_threshold=5, clock=clock),
    )
    task = asyncio.create_task(provider.complete(HI))
    while not llm_server.requests:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # now inside the 30 s Retry-After sleep
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(llm_server.requests) == 1


async def test_cancel_mid_stream_releases_half_open_probe(
    llm_server: FakeLLMServer, make_provider, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5, clock=clock)
    provider = make_provider(breaker=breaker)
    breaker.acquire().failure()
    clock.advance(5)
    llm_server.reply = "a b c d e f g h"
    llm_server.chunk_delay_s = 0.2
    got_first = asyncio.Event()

    async def consume() -> None:
        async for event in provider.stream(HI):
            if isinstance(event, TextDelta):
                got_first.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Tokens were flowing, so the probe counts as a success rather than leaving the breaker stuck.
    assert breaker.state == "closed"


async def test_in_stream_error_after_text_is_interrupted_with_the_server_reason(
    llm_server: FakeLLMServer, make_provider
) -> None:
    llm_server.reply = "one two three four"
    llm_server.stream_error(after_chunks=2)
    with pytest.raises(StreamInterrupted) as info:
        await make_provider().complete(HI)
    assert info.value.partial_text == "one two "
    assert isinstance(info.value.cause, ProviderServerError)
    assert "server error" in info.value.reason
    assert len(llm_server.requests) == 1
