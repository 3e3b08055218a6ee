"""Cost estimates: genai-prices' bundled data, overridden by config/prices.toml."""

from __future__ import annotations

import logging
from pathlib import Path

import pydantic
import pytest

from bot.providers import ChatMessage, ModelPrice, PriceTable, Usage, cost_usd, default_price_table
from bot.providers.cost import DEFAULT_PRICES_PATH
from tests.fakes.llm_server import FakeLLMServer


def test_shipped_price_file_loads_and_covers_common_models() -> None:
    table = PriceTable.load(DEFAULT_PRICES_PATH)
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-5", "o3", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"):
        assert table.lookup(model) is not None, model


@pytest.mark.parametrize(
    ("model", "usage", "expected_usd"),
    [
        # gpt-4o-mini: $0.15 / 1M in, $0.60 / 1M out
        ("gpt-4o-mini", Usage(1_000_000, 1_000_000), 0.75),
        ("gpt-4o-mini", Usage(1200, 350), (1200 * 0.15 + 350 * 0.60) / 1e6),
        # dated snapshot ids resolve to their family
        ("gpt-4o-2024-08-06", Usage(10_000, 2_000), (10_000 * 2.50 + 2_000 * 10.00) / 1e6),
        ("gpt-4o-mini-2024-07-18", Usage(10_000, 2_000), (10_000 * 0.15 + 2_000 * 0.60) / 1e6),
        # claude-sonnet-4-5: $3 in, $15 out
        ("claude-sonnet-4-5-20250929", Usage(5_000, 800), (5_000 * 3 + 800 * 15) / 1e6),
        ("claude-3-5-haiku-latest", Usage(1_000, 1_000), (1_000 * 0.80 + 1_000 * 4.00) / 1e6),
        # local models cost nothing
        ("llama3.1:8b", Usage(50_000, 9_000), 0.0),
    ],
)
def test_cost_from_price_table(model: str, usage: Usage, expected_usd: float) -> None:
    assert cost_usd(model, usage) == pytest.approx(expected_usd, rel=1e-12, abs=1e-15)


def test_unknown_model_costs_zero_and_is_flagged_once(caplog: pytest.LogCaptureFixture) -> None:
    table = PriceTable({"known": ModelPrice(1.0, 2.0)}, bundled=False)
    caplog.set_level(logging.WARNING, logger="bot.providers.cost")
    for _ in range(3):
        cost = table.cost("mystery-model-9", Usage(1000, 1000))
        assert cost.usd == 0.0 and cost.priced is False
    assert table.cost_usd("mystery-model-9", Usage(1, 1)) == 0.0
    assert table.unpriced_models == frozenset({"mystery-model-9"})
    assert [r.getMessage() for r in caplog.records].count(
        "no price for model 'mystery-model-9' in the price table; counting its cost as $0 (unpriced)"
    ) == 1
    assert table.cost("known", Usage(1_000_000, 0)) .priced is True


def test_bundled_prices_match_ids_and_snapshots() -> None:
    table = default_price_table()
    assert table.lookup("claude-opus-4-20250514") == ("claude-opus-4-0", ModelPrice(15.0, 75.0))
    assert table.lookup("GPT-4O") == ("gpt-4o", ModelPrice(2.5, 10.0))
    assert table.lookup("ft:gpt-4o-mini-2024-07-18:acme::abc123") is None  # fine-tunes are billed, not local
    assert table.lookup("mystery-model-9") is None


def test_cached_input_is_priced_at_the_cache_rate() -> None:
    # gpt-4o: $2.50 / 1M input, $1.25 / 1M cached input (genai-prices' bundled data)
    table = default_price_table()
    plain = table.cost_usd("gpt-4o", Usage(1_000_000, 0))
    half_cached = table.cost_usd("gpt-4o", Usage(1_000_000, 0, cache_read_tokens=500_000))
    assert plain == pytest.approx(2.50) and half_cached == pytest.approx(0.5 * 2.50 + 0.5 * 1.25)


def test_the_override_file_wins_over_the_bundled_data(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('[models."gpt-4o"]\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n[local]\npatterns = ["mine-*"]\n')
    table = PriceTable.load(path)
    assert table.lookup("gpt-4o-2024-08-06") == ("gpt-4o", ModelPrice(1.0, 2.0))
    assert table.cost_usd("gpt-4o", Usage(1_000_000, 1_000_000)) == pytest.approx(3.0)
    assert table.cost("mine-7b", Usage(10, 10)).matched == "local"
    assert table.lookup("gpt-4o-mini") is not None  # everything else still comes from the bundled data
    assert PriceTable({}, bundled=False).lookup("gpt-4o") is None


def test_price_file_is_validated(tmp_path: Path) -> None:
    bad = tmp_path / "prices.toml"
    bad.write_text('[models."x"]\ninput_per_mtok = -1\noutput_per_mtok = 1\n')
    with pytest.raises(pydantic.ValidationError):
        PriceTable.load(bad)


async def test_cost_of_a_streamed_reply(llm_server: FakeLLMServer, make_provider) -> None:
    llm_server.usage = (1_234, 56)
    reply = await make_provider(model="gpt-4o-mini").complete([ChatMessage("user", "x")])
    assert reply.usage == Usage(1_234, 56)
    assert cost_usd(reply.model, reply.usage) == pytest.approx((1_234 * 0.15 + 56 * 0.60) / 1e6)
