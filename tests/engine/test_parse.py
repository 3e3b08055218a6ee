"""The text workflow language: structure of compiled graphs, errors with positions, and a property test."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.catalog import Catalog
from engine.definitions import WorkflowDefinition
from engine.errors import UnknownWorkflowError, WorkflowSyntaxError
from engine.parse import compile_text, parse_duration


def cat() -> Catalog:
    return Catalog(
        workflows={"disk-check": WorkflowDefinition("disk-check", "", {"flow": "echo disk ok"})},
        providers=("local", "primary"),
    )


def edges(graph, node_id):  # type: ignore[no-untyped-def]
    return [(e.source, e.condition) for e in graph.node(node_id).edges]


def test_then_is_a_success_edge() -> None:
    g = compile_text("echo a THEN echo b", cat())
    assert [n.label for n in g.steps] == ["echo a", "echo b"]
    assert edges(g, "s2") == [("s1", "success")]
    assert g.exit == "s2"


def test_and_binds_tighter_than_then() -> None:
    g = compile_text("echo a AND echo b THEN echo c", cat())
    # c waits for a gate joining both a and b
    (gate_src, cond), = edges(g, "s4")
    assert cond == "success"
    gate = g.node(gate_src)
    assert gate.is_gate and gate.join == "all"
    assert sorted(e.source for e in gate.edges) == ["s1", "s2"]
    assert g.node("s1").edges == () and g.node("s2").edges == ()


def test_if_success_else_branches_on_outcome() -> None:
    g = compile_text("echo a THEN IF_SUCCESS echo yes ELSE echo no", cat())
    assert edges(g, "s2") == [("s1", "success")]
    assert edges(g, "s3") == [("s1", "failure")]
    exit_gate = g.node(g.exit)
    assert exit_gate.join == "first" and [e.source for e in exit_gate.edges] == ["s2", "s3"]


def test_if_failure_handler_and_continuation() -> None:
    g = compile_text("echo a THEN IF_FAILURE echo fix THEN echo next", cat())
    assert edges(g, "s2") == [("s1", "failure")]
    gate_id = edges(g, "s4")[0][0]
    assert [e.source for e in g.node(gate_id).edges] == ["s2", "s1"]  # handler first, else the original


@pytest.mark.parametrize("text", ["echo a AND echo b THEN IF_ANY_FAILED echo h", "echo a AND echo b AND IF_ANY_FAILED echo h"])
def test_if_any_failed_after_a_group(text: str) -> None:
    g = compile_text(text, cat())
    handler = next(n for n in g.steps if n.label == "echo h")
    (src, cond), = [(e.source, e.condition) for e in handler.edges]
    assert cond == "failure" and g.node(src).join == "all"


def test_parentheses_group_and_modifiers() -> None:
    g = compile_text("(echo a THEN echo b) (retry 2) AND echo c (timeout 500ms) THEN echo d (retry 1, timeout 2m)", cat())
    pol = {n.label: n.policy for n in g.steps}
    assert pol["echo a"].retries == 2 and pol["echo b"].retries == 2
    assert pol["echo c"].timeout_s == 0.5 and pol["echo c"].retries == 0
    assert pol["echo d"].retries == 1 and pol["echo d"].timeout_s == 120


def test_keywords_are_upper_case_only_and_quotes_escape() -> None:
    g = compile_text('echo this and then that THEN echo "A THEN B" and more', cat())
    assert [n.args.get("text") for n in g.steps] == ["this and then that", "A THEN B and more"]


def test_named_workflow_is_inlined_and_with_provider_is_read() -> None:
    g = compile_text("run disk-check THEN write a haiku with local", cat())
    labels = [n.label for n in g.steps]
    assert labels[0] == "disk-check › echo disk ok"
    llm = g.steps[-1]
    assert llm.kind == "llm" and llm.args == {"prompt": "write a haiku", "provider": "local"}
    assert g.uses == ("disk-check",)


def test_unknown_single_name_lists_close_names() -> None:
    with pytest.raises(UnknownWorkflowError) as e:
        compile_text("echo a THEN disk-chek", cat())
    assert e.value.suggestions[0] == "disk-check"
    assert e.value.position == 12


@pytest.mark.parametrize(
    ("text", "line", "column", "needle"),
    [
        ("echo a THEN", 1, 12, "expected a step"),
        ("echo a AND AND echo b", 1, 12, "got 'AND'"),
        ("ELSE echo x", 1, 1, "got 'ELSE'"),
        ("echo a THEN\n  THEN echo b", 2, 3, "got 'THEN'"),
        ('echo "open', 1, 6, "unterminated quote"),
        ("(echo a THEN echo b", 1, 20, "expected"),
        ("echo a) THEN b", 1, 7, "got ')'"),
        ("echo a (retry x)", 1, 8, "bad modifier"),
        ("sleep soon", 1, 1, "sleep takes seconds"),
        ("   ", 1, 1, "empty"),
    ],
)
def test_syntax_errors_point_at_the_position(text: str, line: int, column: int, needle: str) -> None:
    with pytest.raises(WorkflowSyntaxError) as e:
        compile_text(text, cat())
    err = e.value
    assert (err.line, err.column) == (line, column), str(err)
    assert needle in err.reason
    # the caret sits under the offending column of the offending line
    src_line, caret = err.caret().split("\n")
    assert src_line == text.split("\n")[line - 1]
    assert caret == " " * (column - 1) + "^"


def test_durations() -> None:
    assert parse_duration("30s") == 30 and parse_duration("500ms") == 0.5 and parse_duration("2m") == 120
    with pytest.raises(ValueError):
        parse_duration("soon")


WORDS = st.sampled_from(
    ["THEN", "AND", "IF_SUCCESS", "ELSE", "IF_FAILURE", "IF_ANY_FAILED", "(", ")", "echo", "x", "disk-check",
     "(retry 2)", "(timeout 1s)", '"q"', "'", '"', "write a poem", "\n", "sleep", "1", "fail", "run"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(WORDS, max_size=12).map(" ".join) | st.text(max_size=40))
def test_random_text_parses_or_raises_a_positioned_error(text: str) -> None:
    try:
        g = compile_text(text, cat())
    except WorkflowSyntaxError as e:
        assert 0 <= e.position <= len(text)
        assert e.line >= 1 and e.column >= 1
        assert "^" in e.caret()
    except UnknownWorkflowError as e:
        assert e.position is not None and 0 <= e.position <= len(text)
    else:
        assert g.steps, "a parsed workflow has at least one step"
        ids = {n.id for n in g.nodes}
        assert g.exit in ids
        assert all(e.source in ids for n in g.nodes for e in n.edges)
