"""Issue 17: CLI edges — one line instead of a traceback, and --help that shows every default.

4(c) ``run`` whose plans folder cannot be written (``plans/`` under a read-only working directory, as in a
     container): one line naming the folder and ``--plans-dir``, before the pre-scan; nothing written.
5    rich read every ``[default: …]`` in a help text as markup and dropped it: each option of plan, execute,
     run and sync with a default shows ``[default: …]`` (exactly once) in its --help.
"""

from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from sparsesync.cli import _register, app

_register()


def _click_command(name: str):
    return typer.main.get_command(app).commands[name]


# ---------------------------------------------------------------------------------------------- 4(c)
@pytest.mark.mysql
def test_run_with_an_unwritable_plans_folder_is_one_line(mysql_engine, mysql_url, mysql_table, tmp_path, monkeypatch):
    import sparsesync.planner.api as api
    from tests.conftest import insert_keys

    monkeypatch.delenv("SPARSESYNC_SOURCE_URL", raising=False)
    name = mysql_table("CREATE TABLE {name} (id BIGINT PRIMARY KEY, v VARCHAR(10))")
    insert_keys(mysql_engine, name, range(1, 301))
    dest = tmp_path / "out"
    planned = []
    real_make_plan = api.make_plan
    monkeypatch.setattr(api, "make_plan", lambda *a, **kw: (planned.append(1), real_make_plan(*a, **kw))[1])
    monkeypatch.chdir("/sys")  # read-only even for root: the default plans/ cannot be made here
    res = CliRunner().invoke(app, ["run", mysql_url, name, "--dest", str(dest), "--no-cache"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and res.stderr.count("\n") == 1
    assert "folder plans" in res.stderr and "--plans-dir" in res.stderr, res.stderr
    assert not dest.exists()
    assert not planned, "the pre-scan ran before the refusal"
    # an explicit --plans-dir that is a file's child is refused the same way
    (tmp_path / "afile").write_text("x")
    res = CliRunner().invoke(app, ["run", mysql_url, name, "--dest", str(dest), "--no-cache",
                                   "--plans-dir", str(tmp_path / "afile" / "plans")])
    assert res.exit_code == 2 and "--plans-dir" in res.stderr and "afile" in res.stderr, res.output
    # and a writable one works
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["run", mysql_url, name, "--dest", str(dest), "--no-cache"])
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "plans").glob(f"{name}-*.json"))) == 1


# ---------------------------------------------------------------------------------------------- 5
def _help_rows(command: str) -> dict[str, str]:
    """Each option's row of ``command --help`` (terminal wide enough that no help text wraps)."""
    res = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "3000"})
    assert res.exit_code == 0, res.output
    rows = {}
    for line in res.stdout.splitlines():
        m = re.match(r"^│\s+(--[a-z0-9-]+)", line)
        if m:
            rows[m.group(1)] = re.sub(r"\s+", " ", line)
    return rows


def _options_with_defaults(command: str) -> dict[str, object]:
    """``--name`` → its default, for options that have one: stated in the help text as ``[default: …]``, or a
    value typer knows (not None, not an off flag)."""
    out = {}
    for p in _click_command(command).params:
        if not isinstance(p, typer.core.TyperOption) or p.name == "help":
            continue
        stated = "[default:" in (p.help or "")
        known = p.default is not None and not (p.is_flag and p.default is False)
        if stated or known:
            out[p.opts[0]] = p.default
    return out


@pytest.mark.parametrize("command", ["plan", "execute", "run", "sync"])
def test_every_default_shows_in_help(command):
    rows = _help_rows(command)
    wanted = _options_with_defaults(command)
    assert len(wanted) >= 5, wanted  # each of these commands has several
    for opt, default in wanted.items():
        row = rows.get(opt)
        assert row is not None, f"{opt} missing from `{command} --help`"
        assert row.count("[default: ") == 1, f"`{command} --help` {opt}: {row}"
        assert not re.search(r"\s\.\s*│?$", row), f"a dropped markup left ' .' behind: {row}"
        if default is not None and not isinstance(default, bool):
            assert f"[default: {default}" in row, row


def test_help_states_the_documented_defaults():
    plan, execute, run = _help_rows("plan"), _help_rows("execute"), _help_rows("run")
    assert "[default: 100000" in plan["--rows-per-query"] and "[default: 256]" in plan["--file-size"]
    assert "[default: 512, or execute.memory_limit_mb]" in execute["--memory-limit"]
    assert "[default: 5]" in execute["--retries"] and "[default: range]" in execute["--consistency"]
    assert "[default: plans]" in run["--plans-dir"] and "[default: zstd]" in run["--compression"]


# ---------------------------------------------------------------------------------------------- 4(e)
@pytest.mark.mysql
def test_bench_latency_ms_works_from_the_package_alone(mysql_url, mysql_engine, tmp_path, monkeypatch):
    """``bench --latency-ms`` needs the latency proxy: it ships in the package (``sparsesync.bench.proxy``),
    not only in the checkout's ``benchmarks/`` (before: ModuleNotFoundError: sparsesync.bench.proxy)."""
    import subprocess
    import sys

    import sparsesync.bench.counters as counters
    import sparsesync.bench.proxy as proxy_mod

    # the package alone: from a folder where benchmarks/ cannot be imported, the module is there
    res = subprocess.run([sys.executable, "-c", "import sparsesync.bench.proxy as p, importlib.util as u; "
                          "print(p.LatencyProxy.__module__, u.find_spec('benchmarks') is None)"],
                         cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"})
    assert res.stdout.split() == ["sparsesync.bench.proxy", "True"], res.stderr
    # The shared test server's general log (a CSV table every count scans) is huge: counting is stubbed,
    # everything else (fixture, proxy, export) is real.
    monkeypatch.setattr(counters.QueryLog, "count", lambda self, table, **kw: 1)
    used = []
    real_exit = proxy_mod.LatencyProxy.__exit__

    def exit_(self, *exc):
        used.append((self.connections, self.bytes_down))
        return real_exit(self, *exc)

    monkeypatch.setattr(proxy_mod.LatencyProxy, "__exit__", exit_)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["bench", "--source", mysql_url, "--fixtures", "dense", "--rows", "200",
                                   "--strategies", "fixed", "--latency-ms", "1", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, (res.output, res.exception)
    assert used and used[0][0] >= 1 and used[0][1] > 0, used  # the export's connections went through the proxy
    assert "latency 1 ms per round trip" in (tmp_path / "out" / "results.md").read_text()
