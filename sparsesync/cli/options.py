"""One definition per command-line option shared by ``plan``, ``execute``, ``run`` and ``sync``.

Every command that takes an option uses the object defined here, so the same name has the same type, default
and help everywhere (``tests/test_cli_options.py`` compares the commands' click options). Where a command
must differ, it defines its own option next to the command and says why in the help; the test lists those
cases and the options a command lacks on purpose, with the reason.

Options whose value can also come from ``--config`` default to None; their help states the effective default
(``[default: …]``), which the CLI fills in from the config section or the library's default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

# ------------------------------------------------------------------------------------------------ planning
# plan, run and sync (sync plans the spans it re-exports with the same settings)

KEY = typer.Option(None, "--key", help="Indexed integer column to range over (default: the primary key).")
ROWS_PER_QUERY = typer.Option(
    None, "--rows-per-query",
    help="Upper bound of estimated rows per range query [default: 100000, or plan.rows_per_query of --config].")
FILE_SIZE = typer.Option(
    None, "--file-size",
    help="Target Parquet file size in MB; fractions allowed (0.5 = 512 KiB) [default: 256].")
DENSITY = typer.Option(
    None, "--density",
    help="Pre-scan: exact (one index scan, exact counts), sampled (probes; cost grows with ranges, not rows) or "
         "auto (by estimated table size and --rows-per-query) [default: auto].")
CACHE = typer.Option(
    None, "--cache", metavar="FILE",
    help="Histogram cache file (default $XDG_CACHE_HOME/sparsesync/histograms.duckdb, else "
         "~/.cache/sparsesync/histograms.duckdb).")
REFRESH = typer.Option(False, "--refresh", help="Rescan the key density even if the cache holds a histogram.")
NO_CACHE = typer.Option(False, "--no-cache", help="Neither read nor write the histogram cache.")
TINYINT1_AS_BOOL = typer.Option(None, "--tinyint1-as-bool",
                                help="Map TINYINT(1)/BOOL to boolean [default: no, SMALLINT].")
WIDE_DECIMAL_AS_STRING = typer.Option(
    None, "--wide-decimal-as-string", help="Export DECIMAL with precision > 38 as text instead of refusing [default: no].")
SPARSE_THRESHOLD = typer.Option(None, "--sparse-threshold",
                                help="Rows per key below which a stretch is labelled sparse [default: 0.10].")
# plan and run: where the plan file goes (plan -o FILE names the file itself)
PLANS_DIR = typer.Option(
    None, "--plans-dir", metavar="DIR",
    help="Folder the plan is saved in as <table>-<plan_id>.json (made if missing; must be writable) [default: plans].")
DEFAULT_PLANS_DIR = Path("plans")

# ------------------------------------------------------------------------------------------------ exporting
# execute and run (sync takes those that apply to a sync; see tests/test_cli_options.py for the rest)

DEST = typer.Option(..., "--dest",
                    help="Output directory or s3://bucket/prefix; files go to <dest>/<table>/<plan_id>/.")
READER = typer.Option(
    None, "--reader",
    help="auto, pymysql or connectorx [default: auto, or execute.reader of --config]. sync on MySQL: auto means "
         "pymysql and connectorx is refused (its own connection pools are beyond sync's --connections budget).")
WORKERS = typer.Option(
    None, "--workers",
    help="File groups read in parallel (1 = one consistent snapshot; sync: per table) [default: 1].")
COMPRESSION = typer.Option(None, "--compression", help="zstd, snappy, gzip or none [default: zstd].")
STRICT_DATES = typer.Option(None, "--strict-dates", help="Fail on zero dates instead of writing NULL [default: no].")
NO_VERIFY = typer.Option(False, "--no-verify", help="Skip the row-count check at the end.")
IAM_ROLE = typer.Option(None, "--iam-role", help="IAM role ARN written into copy.sql (sync: into each run's load.sql).")
DRY_RUN = typer.Option(False, "--dry-run",
                       help="Check drift and print the range queries; read and write nothing (run still writes its plan).")
MEMORY_LIMIT = typer.Option(
    None, "--memory-limit",
    help="Peak memory target in MB of one export (sync: of each table's); batches and row groups are sized in "
         "bytes to stay under it [default: 512, or execute.memory_limit_mb].")
OVERSIZE = typer.Option(
    "fail", "--oversize",
    help="A text/binary value longer than its Redshift column holds (VARCHAR ≤ 65535, VARBYTE ≤ 1024000 bytes): "
         "fail (stop at the first, naming column and key), truncate (cut, UTF-8 safe, counted in the report) or "
         "keep (write it; report and copy.sql warn) [default: fail].")
NUL = typer.Option(
    "fail", "--nul",
    help="A NUL byte inside a text value (Redshift's COPY rejects it in a VARCHAR): fail (stop at the first, "
         "naming column and key), strip (remove the NUL bytes, counted in the report) or keep (write it; report "
         "and copy.sql warn) [default: fail].")
RETRIES = typer.Option(
    None, "--retries",
    help="Retries per range after a transient source fault (lost connection, deadlock, lock wait timeout), with "
         "exponential backoff; 0 stops at the first [default: 5]; --config: execute.retries. sync also resumes a table's "
         "failed run from its ledger up to 2 times.")
STAGING = typer.Option(
    None, "--staging", metavar="DIR",
    help="S3 destinations: stage parts in a private directory (0700) made inside DIR before upload; "
         "--consistency snapshot: spill rows the writer lags behind there too [default: $TMPDIR]. "
         "Example: --staging /mnt/scratch")
CONSISTENCY = typer.Option(
    "range", "--consistency",
    help="range: each range is read consistently on its own (a serial --reader pymysql run still reads one "
         "snapshot); snapshot: the whole table at ONE point in time with any reader and --workers (MySQL/MariaDB: "
         "InnoDB, and the LOCK TABLES privilege when more than one connection is used), or a one-line error "
         "before anything is written [default: range].")
SHARD = typer.Option(
    None, "--shard", metavar="I/N",
    help="Array jobs: write only shard I's file groups (I = 1…N, balanced by estimated bytes, the same split on "
         "every machine), with its own ledger and lock; re-running a shard resumes it. auto/N takes I from "
         "$JOB_COMPLETION_INDEX or $AWS_BATCH_JOB_ARRAY_INDEX (+1). Then run `sparsesync finalize`. "
         "Example: --shard 3/8")

# --engine dask (execute, run, sync)
ENGINE = typer.Option(
    "local", "--engine",
    help="local (threads in this process) or dask (each file group a task on a Dask cluster; needs the package's "
         "dask extra) [default: local].")
SCHEDULER = typer.Option(
    None, "--scheduler", metavar="ADDRESS",
    help="--engine dask: scheduler address, e.g. tcp://host:8786 (default: $SPARSESYNC_DASK_SCHEDULER, else a "
         "LocalCluster of --workers processes on this machine).")
DASK_CONNECTIONS = typer.Option(
    None, "--connections",
    help="--engine dask: at most this many file groups (source connections) at once (default: the cluster's "
         "worker threads).")
SHARED_FS = typer.Option(
    False, "--shared-fs", help="--engine dask with --scheduler: the local --dest directory is visible to every worker (NFS, …).")

__all__ = [n for n in dir() if n.isupper()] + ["Optional"]
