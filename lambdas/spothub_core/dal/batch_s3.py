"""S3 for batch jobs: the config file a job request names, and the pages of a job's input prefix.

S3's answers become spothub's errors here, so the logic decides on kinds, not on S3's codes:
- reading the config file: NotFound (no such key or bucket), Forbidden (access denied), DependencyUnavailable
  (S3 did not answer; retrying may succeed);
- listing a prefix: FatalError (retrying cannot help: access denied, no such bucket), TransientError (throttled,
  S3's own errors, no connection), the names the listing state machine catches and retries.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spothub_core.dal.state_table import reason_of
from spothub_core.errors import DependencyUnavailable, FatalError, Forbidden, NotFound, TransientError

# What a config file may weigh: a job's fields are a few hundred bytes.
CONFIG_MAX_BYTES = 64 * 1024
# ListObjectsV2's page size, at most (S3 gives up to 1,000 keys a page).
PAGE_SIZE = 1000
# S3 answers worth trying again: throttling and its own failures (HTTP 5xx, any code).
_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "Throttling", "ThrottlingException", "RequestLimitExceeded"}
SERVER_ERROR = 500
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
_DENIED_CODES = {"AccessDenied", "AllAccessDisabled", "403", "InvalidObjectState"}


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _server_side(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return _code(exc) in _TRANSIENT_CODES or int(status or 0) >= SERVER_ERROR


def s3_uri(bucket: str, key_or_prefix: str) -> str:
    return f"s3://{bucket}/{key_or_prefix}"


def read_object(s3: Any, bucket: str, key: str, *, max_bytes: int = CONFIG_MAX_BYTES) -> bytes:
    """The object's bytes. NotFound, Forbidden or DependencyUnavailable as S3 answered; ValueError when the object
    is larger than `max_bytes`."""
    uri = s3_uri(bucket, key)
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
        size = int(response.get("ContentLength") or 0)
        if size > max_bytes:
            response["Body"].close()
            raise ValueError(f"{uri} is {size} bytes; a config file is at most {max_bytes}")
        body = response["Body"].read(max_bytes + 1)
    except ClientError as exc:
        code = _code(exc)
        if code in _MISSING_CODES:
            what = f"bucket {bucket} does not exist" if code == "NoSuchBucket" else f"{uri} does not exist"
            raise NotFound(what) from exc
        if code in _DENIED_CODES:
            raise Forbidden(f"{uri} cannot be read: {reason_of(exc)}") from exc
        if _server_side(exc):
            raise DependencyUnavailable(f"could not read {uri}: {reason_of(exc)}") from exc
        raise Forbidden(f"{uri} cannot be read: {reason_of(exc)}") from exc
    except BotoCoreError as exc:
        raise DependencyUnavailable(f"could not read {uri}: {reason_of(exc)}") from exc
    if len(body) > max_bytes:
        raise ValueError(f"{uri} is over {max_bytes} bytes; a config file is at most {max_bytes}")
    return bytes(body)


def list_page(s3: Any, bucket: str, prefix: str, continuation_token: str | None) -> tuple[list[str], str | None]:
    """One ListObjectsV2 page under `prefix`: its keys in S3's order (UTF-8 binary order) and the token of the
    next page (None on the last)."""
    arguments: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": PAGE_SIZE}
    if continuation_token:
        arguments["ContinuationToken"] = continuation_token
    where = f"listing {s3_uri(bucket, prefix)}"
    try:
        response = s3.list_objects_v2(**arguments)
    except ClientError as exc:
        if _server_side(exc):
            raise TransientError(f"{reason_of(exc)} ({where})") from exc
        # Access denied, no such bucket, a bucket name S3 refuses: the same call will be refused again.
        raise FatalError(f"{reason_of(exc)} ({where})") from exc
    except BotoCoreError as exc:
        raise TransientError(f"{reason_of(exc)} ({where})") from exc
    keys = [str(item["Key"]) for item in response.get("Contents", [])]
    next_token = response.get("NextContinuationToken") if response.get("IsTruncated") else None
    return keys, next_token
