"""Step kinds against real processes, a real local HTTP server and the real disk."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engine.actions import ActionRunner, expand_env, truncate
from engine.errors import StepError
from engine.graph import Node


def node(kind: str, **args) -> Node:  # type: ignore[no-untyped-def]
    return Node("s1", kind, "t", args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def http_server():  # type: ignore[no-untyped-def]
    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            code = {"/ok": 200, "/down": 503, "/missing": 404}.get(self.path, 200)
            body = b"healthy" if code == 200 else b"nope"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a) -> None:  # type: ignore[no-untyped-def]
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()


async def test_shell_runs_argv_without_a_shell() -> None:
    act = ActionRunner(shell_allow=("echo",))
    out = await act(node("shell", argv=["echo", "$HOME; rm -rf /"], timeout_s=5), {})
    assert out.text == "$HOME; rm -rf /\n"  # no shell expansion, no second command


async def test_shell_allow_list_is_enforced_at_run_time() -> None:
    with pytest.raises(StepError, match="not on the shell allow-list"):
        await ActionRunner(shell_allow=("df",))(node("shell", argv=["/bin/rm", "-rf", "/tmp/x"]), {})


async def test_shell_nonzero_exit_fails_with_output() -> None:
    with pytest.raises(StepError, match="exited with status 3") as e:
        await ActionRunner(shell_allow=("sh",))(node("shell", argv=["sh", "-c", "echo partial; exit 3"]), {})
    assert e.value.output == "partial\n"


async def test_shell_timeout_kills_the_process_group() -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(StepError, match="timed out after 0.2s"):
        await ActionRunner(shell_allow=("sh",))(node("shell", argv=["sh", "-c", "sleep 5 & sleep 5"], timeout_s=0.2), {})
    assert loop.time() - t0 < 2


async def test_shell_output_is_truncated() -> None:
    out = await ActionRunner(shell_allow=("sh",), output_limit=100)(node("shell", argv=["sh", "-c", "yes x | head -c 5000"]), {})
    assert len(out.text) < 200 and "characters cut" in out.text
    assert truncate("abc", 10) == "abc"


async def test_http_expected_status(http_server: str) -> None:
    act = ActionRunner()
    out = await act(node("http", url=f"{http_server}/ok", method="GET", expect_status=200, timeout_s=5), {})
    assert "→ 200" in out.text and "healthy" in out.text
    with pytest.raises(StepError, match="→ 503") as e:
        await act(node("http", url=f"{http_server}/down", expect_status=200, timeout_s=5), {})
    assert e.value.retryable
    with pytest.raises(StepError, match="→ 404") as e:
        await act(node("http", url=f"{http_server}/missing", expect_status=200, timeout_s=5), {})
    assert not e.value.retryable


async def test_http_connection_refused_is_retryable() -> None:
    with pytest.raises(StepError, match="ConnectError") as e:
        await ActionRunner()(node("http", url="http://127.0.0.1:9/", timeout_s=2), {})
    assert e.value.retryable


async def test_disk_threshold() -> None:
    out = await ActionRunner()(node("disk", paths=["/"], threshold_percent=100), {})
    assert out.text.startswith("/: ") and "% used" in out.text
    with pytest.raises(StepError, match="over the 0% threshold"):
        await ActionRunner()(node("disk", paths=["/"], threshold_percent=0), {})


def test_env_expansion_with_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATON_X", raising=False)
    assert expand_env("${BATON_X:-http://a}/h") == "http://a/h"
    monkeypatch.setenv("BATON_X", "http://b")
    assert expand_env("${BATON_X:-http://a}/h") == "http://b/h"
