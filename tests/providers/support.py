"""Constants shared by the provider tests (distinctive fake keys, a fast retry policy)."""

from __future__ import annotations

from bot.providers import RetryPolicy

OPENAI_TEST_KEY = "sk-test-OPENAI-8f3a9c2e7b1d4056"
ANTHROPIC_TEST_KEY = "sk-ant-test-ANTHROPIC-5e2d7c1b9a84"
FAST_RETRY = RetryPolicy(max_retries=2, backoff_initial_s=0.01, backoff_max_s=0.02, jitter=False)
