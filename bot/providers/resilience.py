"""Retry policy, ``Retry-After`` parsing and a per-provider circuit breaker.

There is exactly one retry layer: the SDK clients are built with ``max_retries=0``
and :class:`~bot.providers.base.ResilientProvider` retries with tenacity using
:class:`RetryPolicy` — only :class:`~bot.providers.errors.TransientProviderError`,
and only before the first token has been yielded to the caller.
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

from .errors import ProviderUnavailable, TransientProviderError

log = logging.getLogger(__name__)

Clock: TypeAlias = Callable[[], float]
"""Monotonic clock in seconds (default ``time.monotonic``); inject a fake in tests."""

Sleep: TypeAlias = Callable[[float], Awaitable[None]]
"""Async sleep taking seconds (default ``asyncio.sleep``); inject a recorder in tests."""

BreakerState: TypeAlias = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How transient failures are retried (before any token has been streamed).

    * ``max_retries``: retries after the first attempt (so ``max_retries + 1`` attempts).
    * Wait before retry *n* (1-based): the server's ``Retry-After`` if it sent one,
      else ``min(backoff_max_s, backoff_initial_s * 2**(n-1))`` reduced by up to 25 %
      jitter — the same shape as the OpenAI/Anthropic SDKs' own backoff
      (``_calculate_retry_timeout`` in their ``_base_client.py``), seconds.
    * ``max_retry_after_s``: if the server asks to wait longer than this, give up
      at once (so a fallback provider can answer) rather than block the chat.
    """

    max_retries: int = 2
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    max_retry_after_s: float = 60.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if self.backoff_initial_s < 0 or self.backoff_max_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("retry delays must be >= 0 seconds")

    def should_retry(self, exc: BaseException) -> bool:
        """True for a :class:`TransientProviderError` whose ``retry_after_s`` (if any) is within ``max_retry_after_s``."""
        if not isinstance(exc, TransientProviderError):
            return False
        return exc.retry_after_s is None or exc.retry_after_s <= self.max_retry_after_s

    def delay_s(self, retry_number: int, exc: BaseException | None) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based) after failure ``exc``."""
        if isinstance(exc, TransientProviderError) and exc.retry_after_s is not None:
            return max(0.0, exc.retry_after_s)
        delay = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** max(0, retry_number - 1))
        if self.jitter:
            delay *= 1.0 - 0.25 * random.random()
        return delay


def parse_retry_after(headers: Mapping[str, str] | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Server-requested wait in seconds from response headers, or ``None``.

    Order, as the OpenAI and Anthropic SDKs do (``_parse_retry_after_header``):
    ``retry-after-ms`` (milliseconds), then ``Retry-After`` as (possibly fractional)
    seconds, then ``Retry-After`` as an HTTP-date (RFC 9110 §10.2.3). Negative or
    non-finite values are ignored.
    """
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) / divisor
        except ValueError:
            continue
        if math.isfinite(value) and value >= 0:
            return value
    raw = headers.get("retry-after")
    if raw:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is not None:
            try:
                return max(0.0, float(email.utils.mktime_tz(parsed) - now()))
            except (OverflowError, ValueError):
                return None
    return None


class CircuitBreaker:
    """Consecutive-failure circuit breaker for one provider.

    * **closed**: calls pass; each failure increments a counter, each success resets it.
      After ``failure_threshold`` consecutive failures the breaker **opens**.
    * **open**: :meth:`acquire` raises :class:`ProviderUnavailable` (with the seconds
      left) for ``cooldown_s`` seconds, without touching the network.
    * **half-open**: after the cool-down exactly one probe call is let through; others
      still fail fast. Probe success closes the breaker; probe failure re-opens it for
      another ``cooldown_s``.

    "Failure" is what the caller reports: the provider layer reports transient
    errors (429, 5xx, timeouts, connection errors, streams cut short); definite
    answers such as 400/401 count as the server being up. ``clock`` is a monotonic
    seconds function (inject a fake in tests). Not thread-safe; safe within one
    event loop because no method awaits.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Clock = time.monotonic,
        name: str = "",
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be >= 1")
        if cooldown_s < 0:
            raise ValueError("cooldown_s must be >= 0")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.name = name
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._last_failure = ""

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self.state!r}, "
            f"consecutive_failures={self._failures}, threshold={self.failure_threshold})"
        )

    @property
    def state(self) -> BreakerState:
        """Current state; an open breaker whose cool-down has elapsed reports ``half_open``."""
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success."""
        return self._failures

    def retry_in_s(self) -> float:
        """Seconds until a probe is allowed (0 when not open)."""
        if self._state != "open":
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def acquire(self) -> BreakerPermit:
        """Ask to make one call. Returns a :class:`BreakerPermit` to settle with the outcome.

        Raises :class:`ProviderUnavailable` while open, or while half-open with the probe
        already in flight.
        """
        if self._state == "open":
            if self._clock() - self._opened_at < self.cooldown_s:
                raise self._unavailable()
            self._state = "half_open"
            self._probe_in_flight = False
            log.info("provider %r: circuit half-open, sending a probe call", self.name)
        if self._state == "half_open":
            if self._probe_in_flight:
                raise self._unavailable(probing=True)
            self._probe_in_flight = True
            return BreakerPermit(self, probe=True)
        return BreakerPermit(self, probe=False)

    def _unavailable(self, *, probing: bool = False) -> ProviderUnavailable:
        retry_in = self.retry_in_s()
        last = f" (last error: {self._last_failure})" if self._last_failure else ""
        why = (
            "a probe call is already testing it"
            if probing
            else f"circuit open after {self._failures} consecutive failures{last}; next probe in {retry_in:.1f} s"
        )
        return ProviderUnavailable(
            f"provider {self.name!r} is unavailable: {why}", provider=self.name, retry_in_s=retry_in
        )

    def _on_success(self, probe: bool) -> None:
        if probe:
            self._probe_in_flight = False
        if self._state != "closed":
            log.info("provider %r: circuit closed again", self.name)
        self._state = "closed"
        self._failures = 0

    def _on_failure(self, probe: bool, reason: str) -> None:
        self._failures += 1
        self._last_failure = reason
        if probe:
            self._probe_in_flight = False
        if probe or (self._state == "closed" and self._failures >= self.failure_threshold):
            self._state = "open"
            self._opened_at = self._clock()
            log.warning(
                "provider %r: circuit OPEN after %d consecutive failures; failing fast for %.1f s",
                self.name,
                self._failures,
                self.cooldown_s,
            )

    def _on_release(self, probe: bool) -> None:
        if probe:
            self._probe_in_flight = False


class BreakerPermit:
    """One call's ticket from :meth:`CircuitBreaker.acquire`; settle it once.

    :meth:`success` / :meth:`failure` report the outcome; :meth:`release` gives the
    ticket back without an outcome (cancelled call). Later calls are no-ops.
    """

    __slots__ = ("_breaker", "_probe", "_settled")

    def __init__(self, breaker: CircuitBreaker, *, probe: bool) -> None:
        self._breaker = breaker
        self._probe = probe
        self._settled = False

    @property
    def is_probe(self) -> bool:
        """Whether this call is the half-open probe."""
        return self._probe

    def success(self) -> None:
        """Report that the call worked (closes a half-open breaker, resets the failure count)."""
        if not self._settled:
            self._settled = True
            self._breaker._on_success(self._probe)

    def failure(self, reason: str = "") -> None:
        """Report a transient failure (may open the breaker); ``reason`` is shown while it is open."""
        if not self._settled:
            self._settled = True
            self._breaker._on_failure(self._probe, reason)

    def release(self) -> None:
        """Give the permit back with no outcome (e.g. the call was cancelled)."""
        if not self._settled:
            self._settled = True
            self._breaker._on_release(self._probe)
