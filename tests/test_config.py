"""YAML config: defaults, round-trip, CLI merge, and one refusal per kind of mistake."""

from __future__ import annotations

import dataclasses

import pytest

from sparsesync.config import CONFIG_ENV, Config, load_config, merge, parse_config
from sparsesync.errors import ConfigError


def write(tmp_path, text, name="sparsesync.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_none_and_empty_file_give_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert load_config(None) == Config()
    assert load_config(write(tmp_path, "")) == Config()
    assert Config().plan.rows_per_query == 100_000
    assert Config().monitoring.log_format == "auto"


def test_env_variable_names_the_file(tmp_path, monkeypatch):
    p = write(tmp_path, "plan: {rows_per_query: 1234}\n")
    monkeypatch.setenv(CONFIG_ENV, str(p))
    cfg = load_config(None)
    assert cfg.plan.rows_per_query == 1234
    assert cfg.source == str(p)


def test_values_are_read_and_others_keep_defaults(tmp_path):
    cfg = load_config(
        write(
            tmp_path,
            "plan:\n  rows_per_query: 5000\n  density: sampled\n  cache: /tmp/h.duckdb\n"
            "execute: {compression: snappy, workers: 3}\nbench: {time_cap_s: 30, latency_ms: 2.5}\n",
        )
    )
    assert cfg.plan.rows_per_query == 5000 and cfg.plan.density == "sampled" and cfg.plan.cache == "/tmp/h.duckdb"
    assert cfg.plan.file_size_mb == 256  # untouched default
    assert cfg.execute.compression == "snappy" and cfg.execute.workers == 3
    assert cfg.bench.latency_ms == 2.5
    assert cfg.detection == Config().detection


def test_round_trip_of_defaults_and_of_a_changed_config(tmp_path):
    assert parse_config(Config().to_yaml()) == Config()
    changed = dataclasses.replace(
        Config(),
        plan=dataclasses.replace(Config().plan, rows_per_query=777, sparse_threshold=0.25, cache="c.duckdb"),
        execute=dataclasses.replace(Config().execute, strict_dates=True, ledger="s3://b/ledger"),
        monitoring=dataclasses.replace(Config().monitoring, log_format="json"),
    )
    assert changed != Config()
    path = changed.save(tmp_path / "out.yaml")
    assert load_config(path) == changed
    # and the dump itself is stable
    assert load_config(path).to_yaml() == changed.to_yaml()


def test_merge_cli_none_means_config_wins(tmp_path):
    cfg = load_config(write(tmp_path, "plan: {rows_per_query: 5000, density: exact}\n"))
    merged = merge(cfg, "plan", rows_per_query=None, density="sampled", file_size_mb=None)
    assert merged.rows_per_query == 5000  # not given on the command line
    assert merged.density == "sampled"  # given: overrides the file
    assert merged.file_size_mb == 256


def test_merge_refuses_bad_cli_values_and_unknown_names():
    with pytest.raises(ConfigError, match=r"option --rows-per-query .*positive"):
        merge(Config(), "plan", rows_per_query=-5)
    with pytest.raises(ConfigError, match=r"plan\.nope"):
        merge(Config(), "plan", nope=1)
    with pytest.raises(ConfigError, match="unknown config section"):
        merge(Config(), "planz")


@pytest.mark.parametrize(
    "text, path, reason",
    [
        ("plan: {rows_per_querry: 5}\n", "plan.rows_per_querry", "unknown key"),
        ("plann: {}\n", "plann", "unknown section"),
        ("plan: {rows_per_query: many}\n", "plan.rows_per_query", "must be an integer"),
        ("plan: {rows_per_query: 1.5}\n", "plan.rows_per_query", "must be an integer"),
        ("plan: {rows_per_query: true}\n", "plan.rows_per_query", "must be an integer"),
        ("plan: {file_size_mb: -1}\n", "plan.file_size_mb", "positive"),
        ("execute: {memory_limit_mb: 0}\n", "execute.memory_limit_mb", "positive"),
        ("plan: {sparse_threshold: 1.5}\n", "plan.sparse_threshold", "between 0 and 1"),
        ("detection: {efficiency_threshold: -0.1}\n", "detection.efficiency_threshold", "between 0 and 1"),
        ("plan: {density: fast}\n", "plan.density", "must be one of"),
        ("execute: {compression: zip}\n", "execute.compression", "must be one of"),
        ("monitoring: {log_format: xml}\n", "monitoring.log_format", "must be one of"),
        ("execute: {strict_dates: yes please}\n", "execute.strict_dates", "true or false"),
        ("bench: {latency_ms: -3}\n", "bench.latency_ms", "≥ 0"),
        ("plan: {rows_per_query: null}\n", "plan.rows_per_query", "must not be empty"),
        ("plan: [1, 2]\n", "plan", "must be a mapping"),
    ],
)
def test_refusals_name_file_key_path_and_reason(tmp_path, text, path, reason):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    line = err.value.one_line()
    assert str(p) in line
    assert path in line
    assert reason in line
    assert "\n" not in line


def test_invalid_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "plan:\n  rows_per_query: 5\n  density: [unclosed\nexecute: {}\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    line = err.value.one_line()
    assert str(p) in line and "not valid YAML" in line
    assert "line " in line


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- plan\n"))


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_config_error_is_a_usage_error_with_exit_code_2(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "plan: {density: x}\n"))
    assert err.value.exit_code == 2


def test_sections_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().plan.rows_per_query = 1  # type: ignore[misc]
