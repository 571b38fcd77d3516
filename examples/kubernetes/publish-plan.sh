#!/bin/sh
# Publish a plan where the pods of job-shards.yaml / job-finalize.yaml read it, as /plans/orders.json.
#
#   ./publish-plan.sh plans/orders-<plan_id>.json                       # to s3://lake/plans/orders.json (default)
#   ./publish-plan.sh --s3 s3://bucket/plans/orders.json plans/orders-<plan_id>.json
#   ./publish-plan.sh --configmap orders-plan plans/orders-<plan_id>.json   # small plans only
#
# `sparsesync plan` writes plans/<table>-<plan_id>.json; the jobs read the fixed name orders.json (the
# ConfigMap key, or the S3 object the init container copies), so a new plan needs no YAML change.
# A ConfigMap holds at most 1 MiB (1,048,576 bytes, its metadata included): about 6,800 ranges. A bigger
# plan (the README speaks of 10,000-range plans, ~1.5 MB) is refused here with that advice: use S3.
# Env: KEY (default orders.json), KUBECTL (default kubectl), AWS (default aws; without it, python3 + boto3).
set -eu
mode=s3
target=s3://lake/plans/orders.json
case "${1:-}" in
  --s3) mode=s3; target=$2; shift 2 ;;
  --configmap) mode=configmap; target=$2; shift 2 ;;
esac
[ $# -eq 1 ] || { echo "usage: $0 [--s3 s3://bucket/key.json | --configmap NAME] PLAN_FILE" >&2; exit 2; }
plan=$1
key=${KEY:-orders.json}
[ -f "$plan" ] || { echo "publish-plan: $plan is not a file (make one with sparsesync plan)" >&2; exit 5; }
# The plan must be one that sparsesync reads (a typo'd or edited file fails here, not in 8 pods).
sparsesync show "$plan" > /dev/null

if [ "$mode" = configmap ]; then
  size=$(wc -c < "$plan" | tr -d ' ')
  limit=1000000  # 1 MiB less a margin for the ConfigMap's metadata
  if [ "$size" -gt "$limit" ]; then
    echo "publish-plan: $plan is $size bytes; a ConfigMap holds at most 1 MiB (~6,800 ranges) — publish it to S3 instead: $0 --s3 s3://bucket/plans/$key $plan (the jobs' init container fetches it)" >&2
    exit 2
  fi
  "${KUBECTL:-kubectl}" create configmap "$target" --from-file="$key=$plan" --dry-run=client -o yaml \
    | "${KUBECTL:-kubectl}" apply -f -
  echo "plan $plan published as ConfigMap $target (key $key, $size bytes); mount it as the jobs' plans volume"
else
  case "$target" in s3://*) ;; *) echo "publish-plan: --s3 needs s3://bucket/key, got $target" >&2; exit 2 ;; esac
  if command -v "${AWS:-aws}" > /dev/null 2>&1; then
    "${AWS:-aws}" s3 cp "$plan" "$target"
  else
    python3 -c 'import sys, boto3; b, _, k = sys.argv[2][5:].partition("/"); boto3.client("s3").upload_file(sys.argv[1], b, k)' "$plan" "$target"
  fi
  echo "plan $plan published to $target"
fi
