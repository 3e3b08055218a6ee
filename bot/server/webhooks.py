"""Webhook delivery from the outbox, signed per the Standard Webhooks specification.

Rows of ``webhook_outbox`` are written by the run store in the same transaction as
the event (see :mod:`bot.server.events`). :class:`Dispatcher` (a task of ``baton
serve``) POSTs every due row to its ``[webhooks.NAME] url`` with the headers
``webhook-id`` (the event id: stable across retries, so receivers dedupe on it),
``webhook-timestamp`` and ``webhook-signature`` made by the ``standardwebhooks``
library with the secret in the environment variable ``secret_env`` (``whsec_…``).

A 2xx answer delivers the row. Anything else (status, timeout, connection error, a
missing secret) is logged in ``webhook_deliveries`` and retried after
``webhook_retry_initial`` seconds, doubling (±20 % jitter) up to
``webhook_retry_max``, until ``webhook_max_age`` (a day by default) after the event;
then the row is marked ``failed`` (given up). Delivery is therefore at least once.

One dispatcher per database is assumed (the ``baton serve`` process).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import bindparam, func, select, update
from standardwebhooks import Webhook

from bot.server import metrics
from bot.server.events import event_id
from bot.settings import Settings, WebhookEntry
from bot.store.db import Database, _aware
from bot.store.sqlite_worker import transaction
from bot.store.tx import Body
from bot.store.tables import webhook_deliveries, webhook_outbox

log = logging.getLogger("baton.server.webhooks")

IDLE_POLL_S = 5.0
CONCURRENCY = 32


@dataclass(frozen=True, slots=True)
class Delivery:
    """One attempt as logged (``webhook_deliveries``)."""

    id: int
    event_id: str
    webhook: str
    attempt: int
    at: datetime
    status_code: int | None
    outcome: str
    error: str | None
    duration_ms: float
    event_type: str | None = None

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id, "event_id": self.event_id, "webhook": self.webhook, "event_type": self.event_type, "attempt": self.attempt,
            "at": self.at.isoformat(), "status_code": self.status_code, "outcome": self.outcome, "error": self.error,
            "duration_ms": round(self.duration_ms, 2),
        }


def signed_headers(entry: WebhookEntry, msg_id: str, payload: str, *, now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for ``payload``.

    Raises:
        KeyError: the secret's environment variable is not set (the message names it).
        standardwebhooks.WebhookVerificationError: the secret is not a valid ``whsec_…`` value.
    """
    secret = os.environ.get(entry.secret_env)
    if not secret:
        raise KeyError(f"environment variable {entry.secret_env} (the webhook's secret_env) is not set")
    ts = now or datetime.now(UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(ts.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, ts, payload),
        "content-type": "application/json",
    }


def backoff_s(attempts: int, initial: float, maximum: float) -> float:
    """Seconds before the next try after ``attempts`` failures: ``initial·2^(n-1)`` capped, ±20 % jitter."""
    base = min(maximum, initial * (2 ** max(0, attempts - 1)))
    return base * random.uniform(0.8, 1.2)


class Dispatcher:
    """Delivers due outbox rows until cancelled.

    HTTP is aiohttp's client session (created on first use, closed by :meth:`aclose`):
    under a burst of events it costs several times less CPU per delivery than httpx's
    connection pool, which rescans its connections for every queued request.

    Args:
        db: the database holding the outbox.
        settings: ``[webhooks.*]`` and ``[server]`` delivery settings.
    """

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.webhooks = dict(settings.webhooks)
        self.cfg = settings.server
        self._session: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(CONCURRENCY)
        self._sqlite = db.dialect == "sqlite"

    def wake(self) -> None:
        """New outbox rows committed: look now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled (``CancelledError`` propagates)."""
        if not self.webhooks:
            log.debug("no [webhooks] configured; the dispatcher only watches for rows")
        while True:
            self._wake.clear()
            try:
                n = await self.deliver_due()
            except Exception as e:  # a database hiccup: try again after a pause
                log.warning("webhook dispatcher: %s", e)
                n = 0
            if n:
                continue
            try:
                wait = await self._next_wait()
            except Exception:
                wait = IDLE_POLL_S
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except TimeoutError:
                pass

    async def _next_wait(self) -> float:
        if self._sqlite:
            raw = await self.db.worker.call(
                lambda c: c.execute("SELECT min(next_attempt_at) FROM webhook_outbox WHERE status='pending'").fetchone()[0],
                "reading the webhook outbox",
            )
            nxt = _from_sqlite(raw) if raw else None
        else:
            async with self.db.begin("reading the webhook outbox") as conn:
                nxt = _aware((await conn.execute(select(func.min(webhook_outbox.c.next_attempt_at)).where(webhook_outbox.c.status == "pending"))).scalar())
        if nxt is None:
            return IDLE_POLL_S
        return max(0.01, min(IDLE_POLL_S, (nxt - datetime.now(UTC)).total_seconds()))

    async def deliver_due(self, limit: int = 200) -> int:
        """Try every due row once (concurrently, bounded), record the outcomes in one
        transaction; returns how many were tried."""
        now = datetime.now(UTC)
        if self._sqlite:
            sql = (
                "SELECT id, event_id, webhook, payload, attempts, created_at FROM webhook_outbox "
                "WHERE status='pending' AND next_attempt_at <= ? ORDER BY id LIMIT ?"
            )
            raw = await self.db.worker.call(lambda c: c.execute(sql, (self._ts(now), limit)).fetchall(), "reading the webhook outbox")
            rows = [
                {"id": r[0], "event_id": r[1], "webhook": r[2], "payload": r[3], "attempts": r[4], "created_at": _from_sqlite(r[5])}
                for r in raw
            ]
        else:
            async with self.db.begin("reading the webhook outbox") as conn:
                rows = [
                    dict(r)
                    for r in (
                        await conn.execute(
                            select(webhook_outbox)
                            .where(webhook_outbox.c.status == "pending", webhook_outbox.c.next_attempt_at <= now)
                            .order_by(webhook_outbox.c.id)
                            .limit(limit)
                        )
                    ).mappings().all()
                ]
        if rows:
            outcomes = await asyncio.gather(*(self._attempt(r) for r in rows))
            await self._record([self._settle(r, *o) for r, o in zip(rows, outcomes)])
        return len(rows)

    async def _attempt(self, row: dict[str, Any]) -> tuple[int, int | None, str | None, float]:
        """POST one row; returns ``(attempt, status code, error or None, milliseconds)``."""
        async with self._sem:
            entry = self.webhooks.get(row["webhook"])
            attempt = row["attempts"] + 1
            t0 = time.perf_counter()
            code: int | None = None
            error: str | None = None
            if entry is None:
                error = f"webhook {row['webhook']!r} is no longer configured"
            else:
                try:
                    headers = signed_headers(entry, row["event_id"], row["payload"])
                    async with self._client().post(entry.url, data=row["payload"].encode(), headers=headers, allow_redirects=False) as resp:
                        code = resp.status
                        await resp.read()
                    if not 200 <= code < 300:
                        error = f"HTTP {code}"
                except TimeoutError:
                    error = f"no answer within {self.cfg.webhook_timeout:g} s"
                except (aiohttp.ClientError, KeyError, ValueError) as e:
                    error = f"{type(e).__name__}: {e}"
            return attempt, code, error, (time.perf_counter() - t0) * 1000

    def _settle(self, row: dict[str, Any], attempt: int, code: int | None, error: str | None, took_ms: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """The outbox update and the delivery log row for one attempt (and its metrics)."""
        now = datetime.now(UTC)
        created = _aware(row["created_at"]) or now
        values: dict[str, Any] = {"attempts": attempt, "last_error": error}
        if error is None:
            outcome = "delivered"
            values.update(status="delivered", delivered_at=now)
            metrics.WEBHOOK_SECONDS.labels(row["webhook"]).observe(max(0.0, (now - created).total_seconds()))
        else:
            outcome = "error" if code is None else "failed"
            nxt = now + timedelta(seconds=backoff_s(attempt, self.cfg.webhook_retry_initial, self.cfg.webhook_retry_max))
            if (nxt - created).total_seconds() > self.cfg.webhook_max_age:
                values["status"] = "failed"
                metrics.WEBHOOK_DELIVERIES.labels(row["webhook"], "gave_up").inc()
                log.warning("webhook %s: gave up on event %s after %d attempts (%s)", row["webhook"], row["event_id"], attempt, error)
            else:
                values["next_attempt_at"] = nxt
        metrics.WEBHOOK_DELIVERIES.labels(row["webhook"], outcome).inc()
        log_row = {
            "outbox_id": row["id"], "event_id": row["event_id"], "webhook": row["webhook"], "attempt": attempt, "at": now,
            "status_code": code, "outcome": outcome, "error": error, "duration_ms": took_ms,
        }
        return {"id": row["id"], **values}, log_row

    async def _record(self, settled: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
        """Write outbox updates and delivery log rows in one transaction."""
        if self._sqlite:
            ts = self._ts
            stmts = []
            for upd, _ in settled:
                cols = [k for k in upd if k != "id"]
                vals = tuple(ts(upd[k]) if isinstance(upd[k], datetime) else upd[k] for k in cols)
                stmts.append((f"UPDATE webhook_outbox SET {', '.join(f'{k}=?' for k in cols)} WHERE id=?", vals + (upd["id"],)))
            logs = [
                (d["outbox_id"], d["event_id"], d["webhook"], d["attempt"], ts(d["at"]), d["status_code"], d["outcome"], d["error"], d["duration_ms"])
                for _, d in settled
            ]

            def body(c):  # type: ignore[no-untyped-def]
                for sql, vals in stmts:
                    c.execute(sql, vals)
                c.executemany(
                    "INSERT INTO webhook_deliveries(outbox_id, event_id, webhook, attempt, at, status_code, outcome, error, duration_ms) VALUES (?,?,?,?,?,?,?,?,?)",
                    logs,
                )

            await self.db.worker.call(lambda c: transaction(c, body), "recording webhook deliveries")
            return
        async with self.db.begin("recording webhook deliveries") as conn:
            for upd, _ in settled:
                await conn.execute(update(webhook_outbox).where(webhook_outbox.c.id == upd["id"]).values(**{k: v for k, v in upd.items() if k != "id"}))
            await conn.execute(webhook_deliveries.insert(), [d for _, d in settled])

    def _ts(self, dt: datetime) -> str:
        return dt.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")

    async def send_test(self, name: str) -> Delivery:
        """``baton webhooks test NAME``: one signed ``webhook.test`` event, tried once now and logged.

        Raises:
            KeyError: no ``[webhooks.NAME]``.
        """
        if name not in self.webhooks:
            raise KeyError(f"no [webhooks.{name}] in the configuration (known: {', '.join(sorted(self.webhooks)) or 'none'})")
        now = datetime.now(UTC)
        eid = event_id()
        payload = json.dumps({"type": "webhook.test", "timestamp": now.isoformat(), "data": {"webhook": name}}, separators=(",", ":"))
        row = {"event_id": eid, "webhook": name, "event_type": "webhook.test", "payload": payload, "status": "pending",
               "attempts": 0, "created_at": now, "next_attempt_at": now + timedelta(days=3650)}

        def queue() -> Body[int]:
            return (yield _TEST_QUEUE, row).inserted_id

        oid = await self.db.run(queue, "queueing a test webhook")  # one writer connection on SQLite (issue 13)
        row = {"id": oid, "event_id": eid, "webhook": name, "payload": payload, "attempts": 0, "created_at": now}
        await self._record([self._settle(row, *await self._attempt(row))])
        await self.db.execute(_TEST_SETTLE, {"oid": oid}, what="settling a test webhook")  # a test is tried once, never retried
        return (await delivery_log(self.db, name, limit=1))[0]

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.cfg.webhook_timeout),
                connector=aiohttp.TCPConnector(limit=CONCURRENCY),
                headers={"user-agent": "Baton-Webhooks/1"},
            )
        return self._session

    async def aclose(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None


def _from_sqlite(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


async def delivery_log(db: Database, webhook: str | None = None, *, limit: int = 50, before: int | None = None) -> list[Delivery]:
    """Delivery attempts, newest first (of one webhook, or all); ``before`` is an id cursor."""
    stmt = _log_stmt(bool(webhook), before is not None)
    got = await db.execute(stmt, {"webhook": webhook, "before": before, "limit": limit}, what="reading the webhook delivery log")
    keys = [c.key for c in stmt.selected_columns]
    rows = [dict(zip(keys, r)) for r in got]
    return [
        Delivery(r["id"], r["event_id"], r["webhook"], r["attempt"], _aware(r["at"]), r["status_code"], r["outcome"], r["error"], r["duration_ms"], r["event_type"])  # type: ignore[arg-type]
        for r in rows
    ]


_TEST_QUEUE = webhook_outbox.insert().values(
    **{c: bindparam(c) for c in ("event_id", "webhook", "event_type", "payload", "status", "attempts", "created_at", "next_attempt_at")}
)
_TEST_SETTLE = update(webhook_outbox).where(webhook_outbox.c.id == bindparam("oid"), webhook_outbox.c.status == "pending").values(status="failed")
_LOG: dict[tuple[bool, bool], Any] = {}


def _log_stmt(by_webhook: bool, before: bool) -> Any:
    """The delivery log query, built once per shape (statements are compiled once per object)."""
    got = _LOG.get((by_webhook, before))
    if got is None:
        q = (
            select(webhook_deliveries, webhook_outbox.c.event_type)
            .join(webhook_outbox, webhook_outbox.c.id == webhook_deliveries.c.outbox_id)
            .order_by(webhook_deliveries.c.id.desc())
            .limit(bindparam("limit"))
        )
        if by_webhook:
            q = q.where(webhook_deliveries.c.webhook == bindparam("webhook"))
        if before:
            q = q.where(webhook_deliveries.c.id < bindparam("before"))
        got = _LOG[(by_webhook, before)] = q
    return got
