#!/bin/sh
# AWS Batch: an array job of N shards (AWS_BATCH_JOB_ARRAY_INDEX counts from 0, hence +1; `--shard auto/N`
# does the same), then finalize once every child succeeded (--depends-on the array job: Batch starts it
# after ALL children are done).
#
# Once:    aws batch register-job-definition --cli-input-json file://job-definition.json
# Per run: sparsesync plan ... ; then ./submit.sh plans/orders-<plan_id>.json
#
# job-definition.json gives every job of it (shards and finalize, which counts rows per range on the
# source) the password as SPARSESYNC_SOURCE_PASSWORD from Secrets Manager — never on a command line —
# and the S3 credentials through its job role (jobRoleArn: s3:GetObject on the plan, the destination's
# policy of the README's "Writing to S3"). Each job copies the plan from S3 first (plans of 10,000 ranges
# are ~1.5 MB; a job's command line and overrides are limited to 30 KiB).
set -eu
plan=$1
N=${N:-8}
QUEUE=${QUEUE:-etl}
PLAN_URL=${PLAN_URL:-s3://lake/plans/orders.json}
DEST=${DEST:-s3://lake/exports}
IAM_ROLE=${IAM_ROLE:-arn:aws:iam::123:role/load}

sparsesync show "$plan" > /dev/null              # a plan sparsesync reads, before 8 jobs try it
aws s3 cp "$plan" "$PLAN_URL"

array_id=$(aws batch submit-job --job-name export-orders --job-queue "$QUEUE" --job-definition sparsesync \
  --array-properties "size=$N" --query jobId --output text \
  --container-overrides "{\"command\": [\"sh\", \"-c\", \"sparsesync-fetch-plan \$SPARSESYNC_PLAN_URL /tmp/orders.json && sparsesync execute /tmp/orders.json --dest $DEST --shard \$((AWS_BATCH_JOB_ARRAY_INDEX+1))/$N\"]}")

aws batch submit-job --job-name finalize-orders --job-queue "$QUEUE" --job-definition sparsesync \
  --depends-on "jobId=$array_id" \
  --container-overrides "{\"command\": [\"sh\", \"-c\", \"sparsesync-fetch-plan \$SPARSESYNC_PLAN_URL /tmp/orders.json && sparsesync finalize /tmp/orders.json --dest $DEST --iam-role $IAM_ROLE\"]}"
echo "submitted array job $array_id ($N shards) and its finalize"
