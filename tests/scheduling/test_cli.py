"""``baton schedule explain``: the typer sub-app, mounted the way the lead mounts it."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from bot.scheduling.cli import schedule_app

runner = CliRunner()
baton = typer.Typer()
baton.add_typer(schedule_app, name="schedule")  # what bot/cli.py will do


def explain(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(baton, ["schedule", "explain", *args])


def test_json_has_the_documented_keys_and_iso_times() -> None:
    r = explain("--now", "2026-03-06T15:00", "--tz", "America/New_York", "--json", "every weekday at 9am run standup-report")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"trigger", "timezone", "description", "workflow", "next", "policy_violations"}
    assert out["trigger"] == {"kind": "cron", "expression": "0 9 * * 1-5"}
    assert out["timezone"] == "America/New_York" and out["workflow"] == "standup-report"
    assert out["description"] == "At 09:00 AM, Monday through Friday"
    assert out["next"][:3] == ["2026-03-09T09:00:00-04:00", "2026-03-10T09:00:00-04:00", "2026-03-11T09:00:00-04:00"]
    assert len(out["next"]) == 5 and out["policy_violations"] == []


def test_policy_violations_are_reported_not_refused() -> None:
    r = explain("--now", "2026-03-06T15:00:00+00:00", "--json", "every 30 seconds run echo x")
    assert r.exit_code == 0
    (v,) = json.loads(r.stdout)["policy_violations"]
    assert v["rule"] == "min_interval" and v["limit_seconds"] == 60 and v["actual_seconds"] == 30
    r = explain("--now", "2026-03-06T15:00:00+00:00", "--json", "--min-interval", "10", "every 30 seconds run echo x")
    assert json.loads(r.stdout)["policy_violations"] == []


def test_text_output_is_a_readable_table() -> None:
    r = explain("--now", "2026-03-27T12:00", "--tz", "Europe/Berlin", "every day at 2:30 run disk-check")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[:4] == ["Trigger:     cron 30 2 * * *", "Time zone:   Europe/Berlin", "Description: At 02:30 AM", "Workflow:    disk-check"]
    # Sunday 29 March: 02:30 does not exist in Berlin; it fires at 03:30 CEST
    assert lines[4:7] == ["Next:        2026-03-28T02:30:00+01:00", "             2026-03-29T03:30:00+02:00", "             2026-03-30T02:30:00+02:00"]
    assert lines[-1] == "Policy:      ok"


def test_not_understood_exits_1_with_the_position() -> None:
    r = explain("every blursday at 9 run echo x")
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.splitlines()[:3] == [
        "could not understand 'blursday' at position 6: expected a day name, a month name, a unit (minutes, hours, "
        "days, weeks, months, years) or an ordinal such as 1st or last",
        "  every blursday at 9 run echo x",
        "        ^^^^^^^^",
    ]
    r = explain("--json", "every blursday at 9 run echo x")
    assert r.exit_code == 1
    err = json.loads(r.stdout)
    assert (err["position"], err["fragment"]) == (6, "blursday") and len(err["examples"]) == 2


def test_bad_options_exit_2() -> None:
    r = explain("--now", "yesterday-ish", "every day run x")
    assert r.exit_code == 2 and "--now 'yesterday-ish' is not an ISO 8601 time" in r.stderr
    r = explain("--tz", "Mars/Olympus", "every day run x")
    assert r.exit_code == 2 and "unknown time zone 'Mars/Olympus'" in r.stderr
