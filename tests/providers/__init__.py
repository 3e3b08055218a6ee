"""Tests for bot.providers (run against the in-process fake LLM server)."""
