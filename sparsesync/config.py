"""The YAML configuration file read by ``plan``, ``execute`` and ``bench``.

Every section and key is optional and has a default. Unknown keys and bad values are refused with a
:class:`ConfigError` naming the file, the key path (e.g. ``plan.rows_per_query``) and the reason, so a
typo never silently falls back to a default. Command-line values override the file (:func:`merge`).

Example::

    plan:      {rows_per_query: 100000, file_size_mb: 256, density: auto}
    execute:   {compression: zstd, workers: 2}
    monitoring: {log_format: json}
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_type_hints

from sparsesync.errors import ConfigError

CONFIG_ENV = "SPARSESYNC_CONFIG"


# ---- sections ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlanSection:
    rows_per_query: int = 100_000
    file_size_mb: float = 256.0  # fractions allowed: 0.5 = 512 KiB
    density: str = "auto"
    sparse_threshold: float = 0.10
    cache: str | None = None
    tinyint1_as_bool: bool = False
    wide_decimal_as_string: bool = False


@dataclass(frozen=True)
class ExecuteSection:
    reader: str = "auto"
    compression: str = "zstd"
    workers: int = 1
    batch_rows: int = 65_536
    memory_limit_mb: int = 512
    strict_dates: bool = False
    ledger: str | None = None
    retries: int = 5  # per range, for transient source faults (lost connection, deadlock, lock wait)
    # Where S3 parts are staged and span statements spill (private mkdtemps inside); default $TMPDIR.
    staging: str | None = None


@dataclass(frozen=True)
class DetectionSection:
    """Roadmap baselines (used by ``bench`` to reproduce the Phase 1 sparse detection)."""

    efficiency_threshold: float = 0.10
    min_chunk_size_check: int = 1000
    consecutive_sparse_limit: int = 2


@dataclass(frozen=True)
class AdaptiveScalingSection:
    enabled: bool = True
    max_scale_factor: int = 10
    max_chunk_size: int = 500_000


@dataclass(frozen=True)
class AccumulationSection:
    enabled: bool = True
    min_batch_size: int = 50_000
    max_batch_size: int = 200_000
    max_memory_mb: int = 512


@dataclass(frozen=True)
class MonitoringSection:
    log_efficiency_metrics: bool = True
    alert_on_sparse_detection: bool = True
    track_performance_gains: bool = True
    log_format: str = "auto"
    log_level: str = "warning"  # info shows per-range efficiency and sparse-region events


@dataclass(frozen=True)
class BenchSection:
    time_cap_s: float = 120.0
    latency_ms: float = 0.0


@dataclass(frozen=True)
class Config:
    """The whole configuration; ``source`` is the file it came from (``None`` for defaults)."""

    plan: PlanSection = field(default_factory=PlanSection)
    execute: ExecuteSection = field(default_factory=ExecuteSection)
    detection: DetectionSection = field(default_factory=DetectionSection)
    adaptive_scaling: AdaptiveScalingSection = field(default_factory=AdaptiveScalingSection)
    accumulation: AccumulationSection = field(default_factory=AccumulationSection)
    monitoring: MonitoringSection = field(default_factory=MonitoringSection)
    bench: BenchSection = field(default_factory=BenchSection)
    source: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Sections as plain dicts (no ``source``)."""
        return {f.name: asdict(getattr(self, f.name)) for f in fields(self) if f.name != "source"}

    def to_yaml(self) -> str:
        """YAML that :func:`load_config` reads back to an equal Config."""
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Write :meth:`to_yaml` to ``path`` (whole file, replaced atomically)."""
        from sparsesync.atomic import write_atomic

        return write_atomic(path, self.to_yaml())


SECTIONS: dict[str, type] = {
    "plan": PlanSection,
    "execute": ExecuteSection,
    "detection": DetectionSection,
    "adaptive_scaling": AdaptiveScalingSection,
    "accumulation": AccumulationSection,
    "monitoring": MonitoringSection,
    "bench": BenchSection,
}

# Value rules beyond the type: enums, ranges. Sizes and counts must be positive unless listed as ≥ 0.
ENUMS: dict[str, tuple[str, ...]] = {
    "plan.density": ("auto", "exact", "sampled"),
    "execute.reader": ("auto", "pymysql", "connectorx"),
    "execute.compression": ("zstd", "snappy", "gzip", "none"),  # what `execute --compression` accepts
    "monitoring.log_format": ("auto", "json", "text"),
    "monitoring.log_level": ("debug", "info", "warning", "error"),
}
FRACTIONS = {"plan.sparse_threshold", "detection.efficiency_threshold"}  # 0..1 inclusive
NON_NEGATIVE = {"bench.latency_ms", "detection.consecutive_sparse_limit", "execute.retries"}
POSITIVE_FLOAT = {"bench.time_cap_s", "adaptive_scaling.max_scale_factor", "plan.file_size_mb"}


# ---- loading ----------------------------------------------------------------------------------------
def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read the config at ``path``, else ``$SPARSESYNC_CONFIG``, else return the defaults."""
    if path is None:
        env = os.environ.get(CONFIG_ENV)
        if not env:
            return Config()
        path = env
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {p} does not exist", hint=f"check the path (or ${CONFIG_ENV})") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"config path {p} is a directory", hint="pass a .yaml file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {p}: {exc}") from exc
    return parse_config(text, origin=str(p))


def parse_config(text: str, *, origin: str = "<config>") -> Config:
    """Parse YAML text into a validated :class:`Config`; ``origin`` names it in errors."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).split("\n", 1)[0]
        raise ConfigError(f"config {origin} is not valid YAML{where}: {problem}") from exc
    if data is None:
        return Config(source=origin)
    if not isinstance(data, dict):
        raise ConfigError(f"config {origin}: the top level must be a mapping of sections, got {_tname(data)}")
    built: dict[str, Any] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise _bad(origin, str(section), f"unknown section (known: {', '.join(SECTIONS)})")
        if values is None:
            continue
        if not isinstance(values, dict):
            raise _bad(origin, str(section), f"must be a mapping of keys, got {_tname(values)}")
        built[section] = _build_section(SECTIONS[section], section, values, origin)
    return Config(**built, source=origin)


def _build_section(cls: type, section: str, values: dict, origin: str):
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    out = {}
    for key, value in values.items():
        path = f"{section}.{key}"
        if key not in known:
            raise _bad(origin, path, f"unknown key (known: {', '.join(sorted(known))})")
        out[key] = check_value(path, hints[key], value, origin)
    return cls(**out)


def check_value(path: str, hint: Any, value: Any, origin: str = "<config>") -> Any:
    """Check one value against its declared type and the rules for ``path``; return it normalised."""
    allows_none = "None" in str(hint)
    base = str(hint).replace(" | None", "").replace("typing.Optional[", "").rstrip("]")
    if value is None:
        if allows_none:
            return None
        raise _bad(origin, path, "must not be empty (null)")
    if "bool" in base:
        if not isinstance(value, bool):
            raise _bad(origin, path, f"must be true or false, got {value!r}")
        return value
    if "int" in base:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(origin, path, f"must be an integer, got {value!r}")
        if path in NON_NEGATIVE:
            if value < 0:
                raise _bad(origin, path, f"must be ≥ 0, got {value}")
        elif value < 1:
            raise _bad(origin, path, f"must be a positive integer, got {value}")
        return value
    if "float" in base:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(origin, path, f"must be a number, got {value!r}")
        value = float(value)
        if path in FRACTIONS and not 0.0 <= value <= 1.0:
            raise _bad(origin, path, f"must be between 0 and 1, got {value:g}")
        if path in NON_NEGATIVE and value < 0:
            raise _bad(origin, path, f"must be ≥ 0, got {value:g}")
        if path in POSITIVE_FLOAT and value <= 0:
            raise _bad(origin, path, f"must be positive (> 0), got {value:g}")
        return value
    if "str" in base:
        if not isinstance(value, str):
            raise _bad(origin, path, f"must be a string, got {value!r}")
        if path in ENUMS and value not in ENUMS[path]:
            raise _bad(origin, path, f"must be one of {', '.join(ENUMS[path])}, got {value!r}")
        return value
    raise _bad(origin, path, f"has an unsupported type {hint}")  # pragma: no cover - programming error


def merge(config: Config, section: str, **cli_values: Any):
    """The section with command-line values applied: ``None`` means "not given", so the file wins.

    Given values are checked like file values (a bad one names ``--``-less key path and ``command line``).
    """
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r} (known: {', '.join(SECTIONS)})")
    current = getattr(config, section)
    hints = get_type_hints(type(current))
    known = {f.name for f in fields(current)}
    changes = {}
    for key, value in cli_values.items():
        if key not in known:
            raise ConfigError(f"unknown option {section}.{key}", hint=f"known: {', '.join(sorted(known))}")
        if value is None:
            continue
        changes[key] = check_value(f"{section}.{key}", hints[key], value, "command line")
    return replace(current, **changes)


def _bad(origin: str, path: str, reason: str) -> ConfigError:
    if origin == "command line":  # a flag's value, not a file's: name the flag the user typed
        flag = "--" + path.rsplit(".", 1)[-1].replace("_", "-")
        command = path.split(".")[0]
        where = f"sparsesync {command} --help" if command in ("plan", "execute", "bench") else "sparsesync --help"
        return ConfigError(f"option {flag} {reason}", hint=f"see `{where}`")
    return ConfigError(f"config {origin}: {path} {reason}", hint="fix or remove the key", file=None)


def _tname(v: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(v), type(v).__name__)
