"""Routes YAML loader and schema, Route/Decision records, close_names."""

from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from bot.routing import Candidate, Decision, Layer, Route, RouteConfigError, close_names, dump_routes, load_routes, parse_routes

from .conftest import EXAMPLE_YAML


def test_example_file_loads_with_every_field():
    routes = load_routes(EXAMPLE_YAML)
    by = {r.name: r for r in routes}
    assert list(by) == ["disk-check", "deploy", "service-health", "system-report", "smalltalk"]
    dep = by["deploy"]
    assert dep.target == "run: build THEN deploy-service"
    assert dep.threshold == 0.3  # own threshold beats defaults.threshold
    assert by["disk-check"].threshold == 0.15  # from defaults
    assert dep.allowed_users == ("U012ABCDEF",) and dep.allowed_roles == ("ops",)
    assert dep.patterns[0].flags & re.IGNORECASE
    assert dep.patterns[0].search("Deploy api to STAGING").groupdict() == {"service": "api", "env": "STAGING"}
    assert by["disk-check"].keywords == ("disk space", "disk usage")
    assert by["smalltalk"].negative and by["smalltalk"].target == ""
    assert len(by["deploy"].examples) == 5


def test_round_trip_through_dump():
    routes = load_routes(EXAMPLE_YAML)
    again = parse_routes(yaml.safe_load(yaml.safe_dump(dump_routes(routes))))
    assert again == routes


def test_yaml_text_and_bare_list_are_accepted():
    routes = load_routes("- name: a\n  target: x\n  examples: [hi there]\n")
    assert routes[0].name == "a" and routes[0].examples == ("hi there",)


@pytest.mark.parametrize(
    "text, where",
    [
        ("routes:\n  - name: a\n    target: x\n    exmaples: [x]\n", "unknown key(s) ['exmaples']"),
        ("routes:\n  - name: a\n    target: x\n  - name: A\n    target: y\n", "duplicate name"),
        ("routes:\n  - name: a\n", "needs a target"),
        ("routes:\n  - name: a\n    target: x\n    patterns: ['(unclosed']\n", "routes[0] (a).patterns[0]: invalid regex"),
        ("routes:\n  - name: a\n    target: x\n    threshold: 2\n", "threshold: must be within [-1, 1]"),
        ("routes:\n  - name: a\n    target: x\n    threshold: high\n", "expected a number"),
        ("routes:\n  - name: has space\n    target: x\n", "route name must match"),
        ("routes:\n  - name: n\n    negative: true\n    keywords: [x]\n", "negative route may only have examples"),
        ("routes:\n  - name: n\n    negative: true\n", "negative route needs examples"),
        ("routes:\n  - name: a\n    target: x\n    examples: [ok, '']\n", "examples[1]: expected a non-empty string"),
        ("routes:\n  - name: a\n    target: x\n    keywords: {a: 1}\n", "keywords: expected a list of strings"),
        ("version: 2\nroutes: []\n", "unsupported version"),
        ("routs: []\n", "unknown top-level key(s) ['routs']"),
        ("defaults: {treshold: 0.3}\nroutes: []\n", "defaults: only ['run_threshold', 'threshold']"),
        ("routes: {a: 1}\n", "'routes' must be a list"),
        ("routes: [\n", "invalid YAML"),
    ],
)
def test_schema_errors_name_the_place(text, where):
    with pytest.raises(RouteConfigError) as e:
        load_routes(text if "\n" in text else text + "\n")
    assert where in str(e.value)


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(RouteConfigError, match="cannot read"):
        load_routes(tmp_path / "nope.yaml")


def test_records_are_frozen_and_args_read_only():
    d = Decision(Layer.RULES, "deploy", 1.0, Candidate("x", 0.5), "pattern", {"env": "prod"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.route = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        d.args["env"] = "dev"  # type: ignore[index]
    assert d.matched and not d.ambiguous and not d.is_chat
    assert hash(d) == hash(Decision(Layer.RULES, "deploy", 1.0, Candidate("x", 0.5), "pattern", {"env": "other"}))
    amb = Decision(Layer.EMBEDDING, None, 0.4, candidates=(Candidate("a", 0.4), Candidate("b", 0.38)))
    assert amb.ambiguous and not amb.matched
    with pytest.raises(ValueError):
        Decision(Layer.EMBEDDING, "a", 0.4, candidates=(Candidate("a", 0.4), Candidate("b", 0.38)))


def test_route_label_text():
    assert Route("calendar_update", "x").label_text == "calendar update"
    assert Route("disk-check", "x").label_text == "disk check"


def test_close_names():
    known = ["disk-check", "system-report", "service-health", "deploy"]
    assert close_names("disk_chek", known)[0] == "disk-check"
    assert close_names("DISK CHECK", known)[0] == "disk-check"  # case and separators ignored
    assert close_names("sytem-report", known, limit=1) == ["system-report"]
    assert close_names("zzzz", known) == []
    assert close_names("", known) == [] and close_names("x", known, limit=0) == []
    assert len(close_names("s", known + ["s1", "s2", "s3"], limit=3)) <= 3
    assert close_names("deploy", ["deploy", "deploy"]) == ["deploy"]
