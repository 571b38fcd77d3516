"""Airflow (2.9+ or 3): export one table as N array shards, then one finalize, then verify.

Copy this file into your DAGs folder. The plan is made (and reviewed) beforehand with
``sparsesync plan`` and placed where every worker reads it (PLAN below). The source's password comes
from the Airflow connection ``mysql_etl`` (its password only: host, user and database are the plan's)
and reaches EVERY task that talks to the source — the shards (they read rows), ``finalize`` (its
``COUNT(*)`` check per range) and ``verify`` (its checksums) — through the task's environment, never
its command line. S3 credentials come from the worker's usual AWS settings (instance role, AWS_PROFILE,
environment).

A retried shard resumes (it skips its groups that are done); finalize runs once every mapped shard has
succeeded and exits 11, naming the missing shards, if one has not.

Settings (environment variables of the scheduler and workers, with defaults):
SPARSESYNC_DAG_PLAN, SPARSESYNC_DAG_DEST, SPARSESYNC_DAG_SHARDS, SPARSESYNC_DAG_IAM_ROLE.
Checked by tests/test_examples.py (every command through the real CLI parser, the environment of
every task that reaches the source).
"""

from __future__ import annotations

import os
import shlex

import pendulum

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2.9+
    from airflow.decorators import dag, task
    from airflow.operators.bash import BashOperator

PLAN = os.environ.get("SPARSESYNC_DAG_PLAN", "/opt/plans/orders-20250101T000000Z-abc123.json")
DEST = os.environ.get("SPARSESYNC_DAG_DEST", "s3://lake/exports")
N = int(os.environ.get("SPARSESYNC_DAG_SHARDS", "8"))
IAM_ROLE = os.environ.get("SPARSESYNC_DAG_IAM_ROLE", "arn:aws:iam::123:role/load")

# For every task that reaches the source. append_env=True keeps the worker's own environment (PATH,
# AWS settings) beside it. The template is rendered when the task runs; the password is not logged.
SOURCE_ENV = {"SPARSESYNC_SOURCE_PASSWORD": "{{ conn.mysql_etl.password }}"}

plan, dest, role = shlex.quote(PLAN), shlex.quote(DEST), shlex.quote(IAM_ROLE)


@dag(dag_id="sparsesync_export_orders", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
     catchup=False, tags=["sparsesync"])
def sparsesync_export_orders():
    @task.bash(retries=3, env=SOURCE_ENV, append_env=True)
    def shard(i: int) -> str:
        return f"sparsesync execute {plan} --dest {dest} --shard {i}/{N}"

    # --iam-role: finalize writes copy.sql (the shards write no load files).
    @task.bash(env=SOURCE_ENV, append_env=True)
    def finalize() -> str:
        return f"sparsesync finalize {plan} --dest {dest} --iam-role {role}"

    @task.bash(env=SOURCE_ENV, append_env=True)
    def verify() -> str:
        return f"sparsesync verify {plan} --dest {dest}"

    shard.expand(i=list(range(1, N + 1))) >> finalize() >> verify()


sparsesync_export_orders()


# The same with the classic operator (mapped over the command lines).
@dag(dag_id="sparsesync_export_orders_classic", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
     catchup=False, tags=["sparsesync"])
def sparsesync_export_orders_classic():
    shards = BashOperator.partial(task_id="shard", retries=3, env=SOURCE_ENV, append_env=True).expand(
        bash_command=[f"sparsesync execute {plan} --dest {dest} --shard {i}/{N}" for i in range(1, N + 1)]
    )
    final = BashOperator(task_id="finalize", env=SOURCE_ENV, append_env=True,
                         bash_command=f"sparsesync finalize {plan} --dest {dest} --iam-role {role}")
    shards >> final


sparsesync_export_orders_classic()
