#!/bin/sh
# Slurm: N shards as an array job, then finalize once every task succeeded.
#
#   sparsesync plan orders                 # on a login node; writes plans/orders-<plan_id>.json
#   ./submit.sh /shared/plans/orders-<plan_id>.json
#
# The destination must be S3, or a directory every node sees with working flock (see the README).
# If a task fails, finalize never starts (afterok): re-submit that task (sbatch --array=3 ... shard.sbatch,
# it resumes), then finalize.sbatch. S3 credentials: the nodes' usual AWS settings (AWS_PROFILE, ...).
set -eu
here=$(dirname "$0")
PLAN=$1
N=${N:-8}
DEST=${DEST:-s3://lake/exports}
IAM_ROLE=${IAM_ROLE:-arn:aws:iam::123:role/load}
export PLAN DEST IAM_ROLE
sparsesync show "$PLAN" > /dev/null    # a plan sparsesync reads, before N tasks try it

array_id=$(sbatch --parsable --array="1-$N" --export=ALL "$here/shard.sbatch")
sbatch --parsable --dependency="afterok:$array_id" --export=ALL "$here/finalize.sbatch"
echo "submitted array job $array_id ($N shards) and its finalize"
