"""Partitioning a listing into batches: listing order kept, whole batches of batch_size, the rest carried;
names relative to the prefix without "directory" keys; batches and the carry kept within what DynamoDB and the
state machine's state can hold; the listing's failure told as the job's reason."""

from __future__ import annotations

import json

import pytest

from spothub_core.logic.batch_listing import (
    BATCH_MAX_BYTES,
    CARRY_MAX_JSON_BYTES,
    carry_fits,
    failure_reason,
    partition,
    relative_names,
)

NAMES = [f"file-{n:05d}.txt" for n in range(23)]


@pytest.mark.parametrize("batch_size", [1, 2, 5, 7, 10, 22, 23, 24, 1000])
def test_whole_batches_in_listing_order_and_the_rest_carried(batch_size: int) -> None:
    batches, carry = partition(NAMES, batch_size)
    assert all(len(batch) == batch_size for batch in batches)
    assert len(carry) == len(NAMES) % batch_size
    assert [name for batch in batches for name in batch] + carry == NAMES


def test_nothing_listed_makes_no_batch_and_carries_nothing() -> None:
    assert partition([], 10) == ([], [])


def test_the_carry_joins_the_next_page_ahead_of_it() -> None:
    first, carry = partition(NAMES[:13], 5)
    second, carry = partition([*carry, *NAMES[13:]], 5)
    assert [*first, *second] == [NAMES[0:5], NAMES[5:10], NAMES[10:15], NAMES[15:20]]
    assert carry == NAMES[20:]


def test_a_batch_closes_early_at_its_byte_limit_never_empty() -> None:
    long = ["x" * 1000 + f"{n:04d}" for n in range(300)]  # 1,004 bytes each, as long as S3 allows
    batches, carry = partition(long, 1000)
    assert batches and all(sum(len(name) for name in batch) <= BATCH_MAX_BYTES for batch in batches)
    assert [name for batch in batches for name in batch] + carry == long
    # A name over the limit on its own still makes a batch of one, closed when the next name comes.
    assert partition(["y" * 10, "z"], 5, max_bytes=4) == ([["y" * 10]], ["z"])


def test_names_are_relative_to_the_prefix_and_directories_are_not_files() -> None:
    keys = ["in/", "in/a.txt", "in/sub/", "in/sub/b.txt", "in/sub/c/d.bin"]
    assert relative_names(keys, "in/") == ["a.txt", "sub/b.txt", "sub/c/d.bin"]
    # A prefix that is not a folder: the rest of the key, as the agent appends it to the prefix again.
    assert relative_names(["data-1.csv", "data-2.csv", "data"], "data") == ["-1.csv", "-2.csv"]
    assert relative_names(["a", "b/c"], "") == ["a", "b/c"]


def test_a_carry_that_would_crowd_the_state_does_not_fit() -> None:
    assert carry_fits(NAMES)
    escaped = ["é" * 300 + f"{n:04d}" for n in range(100)]  # ~60 KB of UTF-8, ~180 KB JSON-escaped
    assert sum(len(name.encode()) for name in escaped) < BATCH_MAX_BYTES
    assert len(json.dumps(escaped)) > CARRY_MAX_JSON_BYTES
    assert not carry_fits(escaped)


def test_the_reason_is_our_errors_message_as_it_was_raised() -> None:
    cause = json.dumps(
        {
            "errorMessage": "AccessDenied: Access Denied (listing s3://b/p/)",
            "errorType": "FatalError",
            "stackTrace": ["..."],
        }
    )
    assert failure_reason("FatalError", cause) == "AccessDenied: Access Denied (listing s3://b/p/)"


def test_other_failures_are_named_with_what_was_said() -> None:
    lambda_error = json.dumps({"errorMessage": "boom", "errorType": "KeyError"})
    assert failure_reason("KeyError", lambda_error) == "KeyError: boom"
    assert failure_reason("States.Timeout", "") == "States.Timeout"
    assert failure_reason("Sandbox.Timedout", "Task timed out after 120.00 seconds") == (
        "Sandbox.Timedout: Task timed out after 120.00 seconds"
    )
    assert failure_reason("", "") == "the listing failed"
    assert len(failure_reason("X", "y" * 5000)) == 1000
