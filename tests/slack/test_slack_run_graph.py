"""``/run show N graph`` in Slack: the run's picture is uploaded into the thread."""

from __future__ import annotations

import pytest

from engine.picture import layout_available
from tests.slack.conftest import Harness, mention

pytestmark = pytest.mark.skipif(not layout_available(), reason="run pictures need Graphviz's dot (apt-get install graphviz; .ci/run installs it)")


async def test_slack_uploads_the_picture_into_the_thread(harness: Harness) -> None:
    body = mention("run: echo a THEN fail boom")
    thread = body["event"]["ts"]
    await harness.event(body)
    await harness.settle()
    await harness.event(mention("/run show 1 graph", thread_ts=thread))
    await harness.settle()
    (complete,) = harness.slack.calls_to("files.completeUploadExternal")
    assert complete.args["channel_id"] == "C111" and complete.args["thread_ts"] == thread
    assert complete.args.get("initial_comment") == "Run #1 graph"
    (upload,) = harness.slack.calls_to("upload")
    assert harness.slack.uploads[upload.args["file_id"]].startswith(b"\x89PNG")
