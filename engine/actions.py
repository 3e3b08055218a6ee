"""Step kinds: what a node of the graph does when it runs.

Every action is ``async (node, inputs) -> StepOutput`` and raises
:class:`engine.errors.StepError` on failure (``retryable`` decides whether a
retry policy may try again). Kinds:

* ``builtin``: ``echo`` (returns its text), ``sleep`` (seconds), ``fail`` (raises).
* ``shell``: runs an argv list from configuration with no shell, kills it at its
  timeout, captures stdout+stderr (truncated). A non-zero exit fails the step.
* ``http``: one httpx request; fails unless the status equals ``expect_status``
  (and the body contains ``contains`` when given). Connection errors and 5xx are
  retryable.
* ``disk``: ``shutil.disk_usage`` of each path; fails when a path is fuller than
  ``threshold_percent``.
* ``approve``: waits for a person's decision through the :class:`ApprovalGate`
  (no default timeout: set ``(timeout 1h)`` to bound it).
* ``llm``: handed to the configured LLM runner; with none configured it fails with
  a message naming the setting. With ``preferred_providers`` (the node's, else
  ``[workflow.steps.<step>]``'s) the providers are tried in order, the next one on a
  provider failure. With a ``schema`` the step asks for JSON valid against it, checks
  the reply with ``jsonschema`` and asks once more with the error on a mismatch; the
  step's output is then the JSON (so ``${step.field}`` can address it).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import httpx

from engine.children import ChildRegistry
from engine.context import current_run_id
from engine.errors import StepError
from engine.graph import Node

NO_PROVIDER_MESSAGE = (
    "no LLM provider is configured for this step; set OPENAI_API_KEY or ANTHROPIC_API_KEY "
    "(or add a [providers.<name>] entry with base_url in config/baton.toml, e.g. for Ollama)"
)


@dataclass(frozen=True, slots=True)
class StepOutput:
    """What a successful action returns: text plus LLM usage and cost (USD)."""

    text: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0


class ApprovalGate(Protocol):
    """Pauses an ``approve`` step until a person decides.

    ``wait`` returns who approved, or raises :class:`StepError` (not retryable)
    naming who rejected.
    """

    async def wait(self, run_id: str, node: Node) -> str: ...


class LLMRunner(Protocol):
    """Runs an LLM prompt step: ``prompt`` plus the outputs of the steps before it."""

    async def __call__(self, prompt: str, provider: str | None, inputs: Mapping[str, str]) -> StepOutput: ...


def truncate(text: str, limit: int) -> str:
    """Keep the first and last parts of ``text`` within ``limit`` characters, marking the cut."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n…[{len(text) - limit} characters cut]…\n{text[-half:]}"


class ActionRunner:
    """Dispatches a node to its action.

    Args:
        shell_allow: allowed ``argv[0]`` values, checked again at run time.
        output_limit: characters of output kept per step.
        llm: the LLM runner, or ``None`` when no provider is configured.
        http_client_factory: builds the httpx client (tests inject a transport).
        children: where shell children are recorded while they run (reaped after a crash;
            see :mod:`engine.children`); ``None`` records nothing.
        step_providers: step name → provider entries to try in order
            (``[workflow.steps]``); a node's own ``preferred_providers`` win.
    """

    def __init__(
        self,
        *,
        shell_allow: tuple[str, ...] = (),
        output_limit: int = 4000,
        llm: LLMRunner | None = None,
        approvals: ApprovalGate | None = None,
        http_client_factory: Callable[[], httpx.AsyncClient] | None = None,
        children: ChildRegistry | None = None,
        step_providers: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.step_providers = {k: tuple(v) for k, v in (step_providers or {}).items()}
        self.shell_allow = shell_allow
        self.children = children
        self.output_limit = output_limit
        self.llm = llm
        self.approvals = approvals
        self._http_factory = http_client_factory or (lambda: httpx.AsyncClient(follow_redirects=False))
        self._handlers: dict[str, Callable[[Node, Mapping[str, str]], Awaitable[StepOutput]]] = {
            "builtin": self._builtin,
            "shell": self._shell,
            "http": self._http,
            "disk": self._disk,
            "llm": self._llm,
            "approve": self._approve,
        }

    async def __call__(self, node: Node, inputs: Mapping[str, str]) -> StepOutput:
        """Run ``node``; raises :class:`StepError` (or ``TimeoutError`` from the caller's deadline)."""
        handler = self._handlers.get(node.kind)
        if handler is None:
            raise StepError(f"no action of kind '{node.kind}'", retryable=False)
        return await handler(node, inputs)

    async def _builtin(self, node: Node, inputs: Mapping[str, str]) -> StepOutput:
        op = node.args["op"]
        if op == "echo":
            return StepOutput(node.args.get("text", ""))
        if op == "sleep":
            await asyncio.sleep(float(node.args["seconds"]))
            return StepOutput(f"slept {float(node.args['seconds']):g}s")
        if op == "fail":
            raise StepError(node.args.get("message") or "failed on purpose", retryable=True)
        raise StepError(f"unknown built-in '{op}'", retryable=False)

    async def _shell(self, node: Node, inputs: Mapping[str, str]) -> StepOutput:
        argv: list[str] = list(node.args["argv"])
        base = argv[0].rsplit("/", 1)[-1]
        if argv[0] not in self.shell_allow and base not in self.shell_allow:
            raise StepError(f"command '{argv[0]}' is not on the shell allow-list", retryable=False)
        timeout = float(node.args.get("timeout_s", 30))
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            raise StepError(f"cannot start {argv[0]}: {e}", retryable=False) from None
        record = None
        try:
            if self.children is not None:  # durable before we wait: a crash now leaves a trace to reap
                record = self.children.path_for(proc.pid)  # known before the write, so a cancel mid-write still forgets it
                await asyncio.to_thread(self.children.record, proc.pid, current_run_id.get(), node.id, argv)  # fsync: off the loop
            async with asyncio.timeout(timeout):
                out, _ = await proc.communicate()
        except TimeoutError:
            _kill(proc)
            await proc.wait()
            raise StepError(f"{argv[0]} timed out after {timeout:g}s", retryable=True) from None
        except asyncio.CancelledError:
            _kill(proc)  # the process group dies with the step; the cancellation goes on
            raise
        except OSError as e:  # the record could not be written: do not leave an untracked child
            _kill(proc)
            await proc.wait()
            raise StepError(f"cannot record the child process of {argv[0]}: {e}", retryable=False) from None
        finally:
            if record is not None:
                if _cancelling():
                    self.children.forget(record)  # type: ignore[union-attr]  # one unlink; nothing may be awaited now
                else:
                    await asyncio.to_thread(self.children.forget, record)  # type: ignore[union-attr]
        text = truncate(out.decode("utf-8", "replace"), self.output_limit)
        if proc.returncode != 0:
            raise StepError(f"{argv[0]} exited with status {proc.returncode}", retryable=True, output=text)
        return StepOutput(text)

    async def _http(self, node: Node, inputs: Mapping[str, str]) -> StepOutput:
        a = node.args
        url = expand_env(a["url"])
        try:
            async with self._http_factory() as client:
                resp = await client.request(a.get("method", "GET"), url, timeout=float(a.get("timeout_s", 10)))
        except httpx.HTTPError as e:
            raise StepError(f"{a.get('method', 'GET')} {url} failed: {type(e).__name__}: {e}", retryable=True) from None
        body = truncate(resp.text, self.output_limit)
        summary = f"{a.get('method', 'GET')} {url} → {resp.status_code} in {resp.elapsed.total_seconds() * 1000:.0f} ms"
        if resp.status_code != int(a.get("expect_status", 200)):
            raise StepError(
                f"{summary}, expected {a.get('expect_status', 200)}", retryable=resp.status_code >= 500, output=body
            )
        if a.get("contains") and str(a["contains"]) not in resp.text:
            raise StepError(f"{summary}, but the body lacks {a['contains']!r}", retryable=False, output=body)
        return StepOutput(f"{summary}\n{body}".strip())

    async def _disk(self, node: Node, inputs: Mapping[str, str]) -> StepOutput:
        threshold = float(node.args.get("threshold_percent", 90))
        lines, over = [], []
        for path in node.args.get("paths", ["/"]):
            try:
                du = await asyncio.to_thread(shutil.disk_usage, path)
            except OSError as e:
                raise StepError(f"cannot read disk usage of {path}: {e}", retryable=False) from None
            # like df: used / (used + available to unprivileged users); the root reserve is not
            # space anyone can fill, so used/total understates how full a disk is
            pct = 100.0 * du.used / (du.used + du.free) if du.used + du.free else 0.0
            lines.append(f"{path}: {pct:.1f}% used ({_gib(du.used)} used, {_gib(du.free)} available, {_gib(du.total)} size)")
            if pct >= threshold:
                over.append(f"{path} at {pct:.1f}%")
        text = "\n".join(lines)
        if over:
            raise StepError(f"over the {threshold:g}% threshold: {', '.join(over)}", retryable=False, output=text)
        return StepOutput(text)

    async def _approve(self, node: Node, inputs: Mapping[str, str]) -> StepOutput:
        run_id = current_run_id.get()
        if self.approvals is None or run_id is None:
            raise StepError("approval steps need the bot (a chat thread to ask in)", retryable=False)
        who = await self.approvals.wait(run_id, node)
        return StepOutput(f"approved by {who}")

    def providers_for(self, node: Node) -> tuple[str | None, ...]:
        """The provider entries an LLM step tries, in order (``None``: the default one)."""
        if node.preferred_providers:
            return node.preferred_providers
        for name in (node.id, node.id.rsplit(".", 1)[-1], node.label):
            if name in self.step_providers:
                return self.step_providers[name]
        return (node.args.get("provider"),)

    async def _llm(self, node: Node, inputs: Mapping[str, str]) -> StepOutput:
        if self.llm is None:
            raise StepError(NO_PROVIDER_MESSAGE, retryable=False)
        schema = node.args.get("schema")
        prompt = node.args["prompt"]
        if schema:
            prompt += (
                "\n\nAnswer with JSON only (no prose, no code fence), valid against this JSON Schema:\n"
                + json.dumps(schema)
            )
        providers = self.providers_for(node)
        errors: list[str] = []
        for i, p in enumerate(providers):
            try:
                out = await self.llm(prompt, p, inputs)
            except StepError as e:
                if len(providers) == 1:
                    raise
                errors.append(f"{p or 'default'}: {e}")
                if i == len(providers) - 1:
                    raise StepError("every preferred provider failed: " + "; ".join(errors), retryable=e.retryable, output=e.output) from None
                continue
            return await self._checked(out, prompt, p, inputs, schema) if schema else out
        raise StepError("no provider to try", retryable=False)  # pragma: no cover - providers is never empty

    async def _checked(self, out: StepOutput, prompt: str, provider: str | None, inputs: Mapping[str, str], schema: dict) -> StepOutput:  # type: ignore[type-arg]
        """Validate a JSON reply against ``schema``; ask once more with the error on a mismatch."""
        from jsonschema import Draft202012Validator

        from engine.expressions import MISSING, parse_output

        validator = Draft202012Validator(schema)

        def problem_of(text: str) -> tuple[str | None, object]:
            value = parse_output(text)
            if value is MISSING:
                return "the reply is not JSON", value
            errs = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
            if not errs:
                return None, value
            return f"at {'/'.join(map(str, errs[0].path)) or 'the top level'}: {errs[0].message}", value

        problem, value = problem_of(out.text)
        used = out
        if problem is not None:
            retry_prompt = f"{prompt}\n\nYour previous answer was invalid ({problem}):\n{out.text}\nAnswer again with valid JSON only."
            again = await self.llm(retry_prompt, provider, inputs)  # type: ignore[misc]
            used = StepOutput(again.text, out.tokens_in + again.tokens_in, out.tokens_out + again.tokens_out, out.cost_usd + again.cost_usd)
            problem, value = problem_of(again.text)
            if problem is not None:
                raise StepError(f"the reply does not match the step's JSON schema ({problem})", retryable=False, output=again.text)
        return StepOutput(json.dumps(value), used.tokens_in, used.tokens_out, used.cost_usd)


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(value: str) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` from the environment (config values only)."""
    return _ENV.sub(lambda m: os.environ.get(m.group(1)) or (m.group(2) or ""), value)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def _cancelling() -> bool:
    """Whether the current task is being cancelled (then a ``finally`` must not await)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


__all__ = ["ActionRunner", "ApprovalGate", "LLMRunner", "NO_PROVIDER_MESSAGE", "StepOutput", "truncate"]
