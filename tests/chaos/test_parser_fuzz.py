"""Parser fuzz (hypothesis): any text, however nested or broken, compiles or raises one of the
engine's own errors, with a position inside the text; never RecursionError or another crash."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.catalog import Catalog
from engine.errors import EngineError, WorkflowSyntaxError
from engine.parse import MAX_NESTING, compile_text
from tests.chaos.stats import count

CATALOG = Catalog()
TOKENS = [
    "echo a", "echo b", "sleep 0", "fail x", "THEN", "AND", "IF_SUCCESS", "IF_FAILURE", "IF_ANY_FAILED", "ELSE",
    "(", ")", "(retry 3)", "(retry abc)", "(timeout 30s)", "(timeout 0s)", '"A THEN B"', "'", '"', "\n", "disk-chek",
    "run", "approve ok?", "\\", ",",
]  # fmt: skip
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(text: str) -> None:
    count("parser", fuzz_cases=1)
    try:
        graph = compile_text(text, CATALOG)
    except WorkflowSyntaxError as e:
        assert 0 <= e.position <= len(text) and e.line >= 1 and e.column >= 1
        assert "Traceback" not in str(e) and "int()" not in e.reason
        count("parser", syntax_errors=1)
        return
    except EngineError:  # unknown workflow, bad built-in argument: our own words
        return
    assert graph.nodes and graph.exit in {n.id for n in graph.nodes}


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=40))
def test_token_soup(tokens: list[str]) -> None:
    _check(" ".join(tokens))


@FUZZ
@given(st.integers(0, 400), st.integers(0, 400), st.sampled_from(["echo a", "echo a AND echo b", "", "THEN"]))
def test_deep_and_unbalanced_nesting(opened: int, closed: int, inner: str) -> None:
    text = "(" * opened + inner + ")" * closed
    _check(text)
    if opened == closed and inner.startswith("echo") and opened > MAX_NESTING:
        try:
            compile_text(text, CATALOG)
        except WorkflowSyntaxError as e:
            assert "nested more than" in e.reason
        else:
            raise AssertionError("nesting beyond the limit compiled")


@FUZZ
@given(st.binary(max_size=200))
def test_invalid_utf8_read_from_a_pipe(raw: bytes) -> None:
    """What a console or payload may hand over: bytes decoded with surrogateescape or replace."""
    _check(raw.decode("utf-8", "surrogateescape"))
    _check("echo " + raw.decode("utf-8", "replace") + " THEN echo done")


@FUZZ
@given(st.text(max_size=200))
def test_any_unicode_text(text: str) -> None:
    _check(text)
