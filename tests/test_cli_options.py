"""plan, execute, run and sync: the same option name means the same thing everywhere (issue 17, finding 8).

Introspects the click commands typer builds. For every option two or more of the four commands take, type,
default, flag-ness and help must be identical — except the documented cases in ``DIFFERENT`` — and the
options a command lacks are exactly the documented gaps in ``GAPS`` (a new option on one command fails
here until it is given to the others or its gap is documented).
"""

from __future__ import annotations

import pytest
import typer.main

import sparsesync.cli as cli

COMMANDS = ("plan", "execute", "run", "sync")

# option -> {command whose definition differs on purpose: why}
DIFFERENT = {
    "--dest": {"sync": "sync's --dest holds each table's image (<dest>/<table>/), not one plan's output folder"},
    "--connections": {"sync": "sync's budget of source connections over all tables (int, default 4); execute/run's "
                              "is the Dask-only cap on file groups at once"},
    "--consistency": {"sync": "range only: detection and export are separate reads, snapshot is refused"},
    "--shard": {"run": "refused with one line: each shard's run would make its own plan"},
}

# option -> {command that lacks it: why}
GAPS = {
    # the source URL is SOURCE_URL, an argument, on plan, run and sync
    "--source": {"plan": "SOURCE_URL argument", "run": "SOURCE_URL argument", "sync": "SOURCE_URL argument"},
    # where the plan file goes
    "--output": {"execute": "reads a plan", "run": "names the folder (--plans-dir), the file is <table>-<plan_id>.json",
                 "sync": "keeps no plan file"},
    "--plans-dir": {"execute": "reads a plan", "sync": "keeps no plan file"},
    # planning options: execute replays a plan made with them
    **{opt: {"execute": "replays a finished plan"} for opt in (
        "--key", "--rows-per-query", "--file-size", "--density", "--cache", "--no-cache", "--tinyint1-as-bool",
        "--wide-decimal-as-string", "--sparse-threshold")},
    "--refresh": {"execute": "replays a finished plan",
                  "sync": "re-plans only the spans it re-exports; --no-cache bypasses the cache"},
    # export options: plan reads no rows
    **{opt: {"plan": "reads no rows"} for opt in (
        "--dest", "--reader", "--workers", "--compression", "--strict-dates", "--iam-role", "--memory-limit",
        "--oversize", "--nul", "--retries", "--staging", "--consistency", "--engine", "--scheduler",
        "--shared-fs")},
    "--connections": {"plan": "reads no rows"},
    "--no-verify": {"plan": "reads no rows", "sync": "checks each run's counts itself (its image depends on it)"},
    "--dry-run": {"plan": "writes only the plan", "sync": "detection must read the source"},
    "--shard": {"plan": "shards are cut from the plan at execute time", "sync": "one image per table, no shards"},
    # resume / redo one plan's run: run makes a new plan every time
    "--ledger": {"plan": "reads no rows", "run": "new plan each time: use execute", "sync": "each run's own ledger"},
    "--overwrite": {"plan": "-o overwrites", "run": "new plan each time: use execute", "sync": "--full starts a new image"},
}
# sync's own options (multi-table, change detection, metrics)
SYNC_ONLY = ("--all", "--exclude", "--detect", "--lookback", "--full", "--metrics-port", "--metrics-addr",
             "--metrics-file")
for _opt in SYNC_ONLY:
    GAPS[_opt] = {c: "sync only" for c in ("plan", "execute", "run")}


def _commands():
    cli._register()
    group = typer.main.get_command(cli.app)
    return {name: group.commands[name] for name in COMMANDS}


def _options():
    """{long option name: {command: click.Option}}"""
    out: dict = {}
    for name, cmd in _commands().items():
        for p in cmd.params:
            if p.param_type_name == "option" and "--help" not in p.opts:
                out.setdefault(max(p.opts, key=len), {})[name] = p
    return out


def _type(t):
    """A click type by class and plain settings (two equal TyperPath objects are different instances)."""
    return (type(t).__name__, getattr(t, "name", None),
            sorted((k, v) for k, v in vars(t).items() if isinstance(v, (str, int, float, bool, type(None)))))


def _signature(p):
    return {"type": _type(p.type), "default": p.default, "is_flag": p.is_flag, "help": p.help,
            "metavar": p.metavar, "required": p.required}


def test_the_same_option_is_the_same_on_every_command():
    mismatches = []
    for opt, by_cmd in sorted(_options().items()):
        same = {c: p for c, p in by_cmd.items() if c not in DIFFERENT.get(opt, {})}
        sigs = {c: _signature(p) for c, p in same.items()}
        first = next(iter(sigs.values()), None)
        for c, sig in sigs.items():
            for field, value in sig.items():
                if value != first[field]:
                    mismatches.append(f"{opt} {field}: {c}={value!r} vs {next(iter(sigs))}={first[field]!r}")
    assert not mismatches, "\n".join(mismatches)


def test_documented_differences_really_differ_and_exist():
    opts = _options()
    for opt, cmds in DIFFERENT.items():
        for c in cmds:
            assert c in opts.get(opt, {}), f"{opt} documented as different on {c}, which lacks it"
            others = [p for oc, p in opts[opt].items() if oc not in cmds]
            assert others, f"{opt}: nothing to differ from"
            assert _signature(opts[opt][c]) != _signature(others[0]), f"{opt} on {c} is no longer different"


def test_the_gaps_are_exactly_the_documented_ones():
    opts = _options()
    found = {opt: set(COMMANDS) - set(by_cmd) for opt, by_cmd in opts.items()}
    found = {opt: missing for opt, missing in found.items() if missing}
    expected = {opt: set(why) for opt, why in GAPS.items()}
    assert found == expected


@pytest.mark.parametrize("opt", ["--memory-limit", "--retries", "--oversize", "--nul", "--staging", "--consistency",
                                 "--sparse-threshold", "--engine"])
def test_sync_and_run_take_the_export_options(opt):
    opts = _options()
    assert {"run", "sync"} <= set(opts[opt])


def test_plan_and_run_share_the_plans_folder_option_and_plan_keeps_o():
    opts = _options()
    assert opts["--plans-dir"]["plan"] is not None and opts["--plans-dir"]["run"] is not None
    assert {"-o", "--output"} <= set(opts["--output"]["plan"].opts)
