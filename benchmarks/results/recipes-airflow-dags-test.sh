#!/bin/sh
# The real run of examples/airflow/sparsesync_dag.py (issue 17): Airflow in its own venv outside the project.
export AIRFLOW_HOME=/tmp/airflow-home
export AIRFLOW__CORE__DAGS_FOLDER=/work/wt/recipes/examples/airflow
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW_CONN_MYSQL_ETL="mysql://af_etl:${AF_ETL_PASSWORD:?set the password of af_etl}@127.0.0.1:3306/af_recipes"
export SPARSESYNC_DAG_PLAN=/tmp/af/plans/orders.json
export SPARSESYNC_DAG_DEST=/tmp/af/dest
export SPARSESYNC_DAG_SHARDS=2
export PATH=/work/wt/recipes/.venv/bin:$PATH
unset SPARSESYNC_SOURCE_URL SPARSESYNC_SOURCE_PASSWORD
rm -rf /tmp/af/dest
/tmp/airflow-venv/bin/airflow dags test "${1:-sparsesync_export_orders}"
