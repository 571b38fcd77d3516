#!/usr/bin/env python3
"""Copy a plan file from S3 (or a local path) to a local path: the init step of a container job.

    sparsesync-fetch-plan s3://lake/plans/orders.json /plans/orders.json

A plan of 10,000 ranges is ~1.5 MB, more than a Kubernetes ConfigMap holds (1 MiB): fetch it from S3
instead. Uses the container's usual AWS credentials (IRSA / pod identity, instance role, environment).
Installed into the image by examples/kubernetes/Dockerfile as /usr/local/bin/sparsesync-fetch-plan.
"""

from __future__ import annotations

import os
import shutil
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: sparsesync-fetch-plan s3://bucket/key.json|PATH DEST_PATH", file=sys.stderr)
        return 2
    src, dest = argv
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    tmp = dest + ".part"
    try:
        if src.startswith("s3://"):
            import boto3  # a dependency of sparsesync

            bucket, _, key = src[5:].partition("/")
            boto3.client("s3").download_file(bucket, key, tmp)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)  # the plan appears whole or not at all
    except Exception as exc:  # noqa: BLE001 - one line, the init step fails
        print(f"sparsesync-fetch-plan: cannot copy {src} to {dest}: {exc}", file=sys.stderr)
        return 8
    print(f"plan {src} copied to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
