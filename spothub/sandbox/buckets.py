"""The batch jobs' S3 buckets in the emulator: the deployment's allowed input and output buckets
(batchInputBuckets, batchOutputBuckets), created in the hub region when the sandbox starts and put back to
empty (no objects, no bucket policy) by a reset."""

from __future__ import annotations

from typing import Any


def batch_buckets(context: dict[str, Any]) -> list[str]:
    """The input and output buckets a deployment's context names, each once, in order."""
    names: list[str] = []
    for key in ("batchInputBuckets", "batchOutputBuckets"):
        value = context.get(key) or []
        for name in value.split(",") if isinstance(value, str) else value:
            if name and name not in names:
                names.append(name)
    return names


def ensure_bucket(s3: Any, name: str, region: str) -> bool:
    """Create the bucket unless it exists; True when created."""
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if name in existing:
        return False
    if region == "us-east-1":
        s3.create_bucket(Bucket=name)
    else:
        s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region})
    return True


def empty_bucket(s3: Any, name: str) -> int:
    """Delete every object (and the bucket's policy); returns how many objects went."""
    deleted = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
            deleted += len(keys)
    s3.delete_bucket_policy(Bucket=name)
    return deleted


def put_files(s3: Any, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    """Upload `files` (name relative to the prefix -> bytes) under `prefix`."""
    for name, data in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + name, Body=data)


def read_prefix(s3: Any, bucket: str, prefix: str) -> dict[str, bytes]:
    """Every object under `prefix` (name relative to the prefix -> bytes)."""
    found: dict[str, bytes] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"][len(prefix) :]] = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found
