"""Batch mode's files against S3 in moto: inputs keep their sub-paths, unsafe names are refused, outputs land
at output_prefix + their relative path (a re-run overwrites), links are neither followed nor uploaded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from spothub_agent.batch_transfer import BatchTransfer, TransferError, TransferHalted, clear, input_path, output_files
from spothub_core.models.batch_workers import BatchAssignment

REGION = "us-west-2"
BUCKET_REGION = "us-east-1"  # the buckets live elsewhere than the instance: botocore follows them
INPUT_BUCKET = "transfer-input"
OUTPUT_BUCKET = "transfer-output"


def assignment(*names: str, **changes: Any) -> BatchAssignment:
    return BatchAssignment(
        **{
            "batch_id": "b-0000007",
            "file_names": list(names),
            "input_bucket": INPUT_BUCKET,
            "input_prefix": "jobs/in/",
            "output_bucket": OUTPUT_BUCKET,
            "output_prefix": "jobs/out/run-1/",
            "attempt": 1,
            "image": "img",
            "ack_timeout_s": 60,
            "processing_timeout_s": 600,
            **changes,
        }
    )


@pytest.fixture
def s3(aws_credentials: None) -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("s3", region_name=BUCKET_REGION)
        for bucket in (INPUT_BUCKET, OUTPUT_BUCKET):
            client.create_bucket(Bucket=bucket)
        for key, body in {
            "jobs/in/a.txt": "alpha",
            "jobs/in/sub/deep/c.txt": "charlie",
            "jobs/in/b.txt": "bravo",
        }.items():
            client.put_object(Bucket=INPUT_BUCKET, Key=key, Body=body.encode())
        yield client


@pytest.fixture
def transfer(s3: Any) -> BatchTransfer:
    client = boto3.client("s3", region_name=REGION)
    return BatchTransfer(lambda: client)


def output_keys(s3: Any) -> dict[str, str]:
    listed = s3.list_objects_v2(Bucket=OUTPUT_BUCKET).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=OUTPUT_BUCKET, Key=o["Key"])["Body"].read().decode() for o in listed}


def test_inputs_are_downloaded_keeping_their_sub_paths(transfer: BatchTransfer, tmp_path: Path) -> None:
    inputs = tmp_path / "Inputs"
    inputs.mkdir()
    count = transfer.download(assignment("a.txt", "sub/deep/c.txt", "sub/"), inputs)
    assert count == 2  # "sub/" is a folder marker, not a file
    assert (inputs / "a.txt").read_text() == "alpha"
    assert (inputs / "sub" / "deep" / "c.txt").read_text() == "charlie"
    assert sorted(p.relative_to(inputs).as_posix() for p in inputs.rglob("*") if p.is_file()) == [
        "a.txt",
        "sub/deep/c.txt",
    ]


@pytest.mark.parametrize("name", ["../escape.txt", "sub/../../escape.txt", "/etc/passwd", "", "a\0b"])
def test_a_name_that_would_land_outside_inputs_is_refused_before_anything_is_downloaded(
    transfer: BatchTransfer, tmp_path: Path, name: str
) -> None:
    inputs = tmp_path / "work" / "Inputs"
    inputs.mkdir(parents=True)
    with pytest.raises(TransferError, match="refusing the file name"):
        transfer.download(assignment("a.txt", name), inputs)
    assert list(inputs.iterdir()) == []
    assert not (tmp_path / "work" / "escape.txt").exists()


def test_a_link_inside_inputs_cannot_carry_a_name_outside(tmp_path: Path) -> None:
    inputs = tmp_path / "Inputs"
    inputs.mkdir()
    (inputs / "out").symlink_to(tmp_path)
    with pytest.raises(TransferError, match="refusing"):
        input_path(inputs, "out/escape.txt")
    assert input_path(inputs, "sub/x.txt") == inputs / "sub" / "x.txt"


def test_outputs_go_to_the_output_prefix_plus_their_relative_path_and_a_rerun_overwrites(
    transfer: BatchTransfer, s3: Any, tmp_path: Path
) -> None:
    outputs = tmp_path / "Outputs"
    (outputs / "nested" / "more").mkdir(parents=True)
    (outputs / "a.txt.out").write_text("ALPHA")
    (outputs / "nested" / "more" / "c.txt.out").write_text("CHARLIE")
    assert transfer.upload(assignment("a.txt"), outputs) == 2
    assert output_keys(s3) == {"jobs/out/run-1/a.txt.out": "ALPHA", "jobs/out/run-1/nested/more/c.txt.out": "CHARLIE"}
    # The same batch again (taken back and processed elsewhere, or after a restart): the same keys, new content.
    (outputs / "a.txt.out").write_text("ALPHA, AGAIN")
    transfer.upload(assignment("a.txt"), outputs)
    assert output_keys(s3) == {
        "jobs/out/run-1/a.txt.out": "ALPHA, AGAIN",
        "jobs/out/run-1/nested/more/c.txt.out": "CHARLIE",
    }


def test_links_under_outputs_are_neither_followed_nor_uploaded(
    transfer: BatchTransfer, s3: Any, tmp_path: Path
) -> None:
    secret = tmp_path / "host-secret"
    secret.write_text("the host's file")
    elsewhere = tmp_path / "host-dir"
    elsewhere.mkdir()
    (elsewhere / "inside.txt").write_text("the host's directory")
    outputs = tmp_path / "Outputs"
    outputs.mkdir()
    (outputs / "result.out").write_text("RESULT")
    (outputs / "link-to-file").symlink_to(secret)
    (outputs / "link-to-dir").symlink_to(elsewhere)
    assert output_files(outputs) == [outputs / "result.out"]
    transfer.upload(assignment("a.txt"), outputs)
    assert output_keys(s3) == {"jobs/out/run-1/result.out": "RESULT"}
    clear(outputs)
    assert list(outputs.iterdir()) == []
    assert secret.read_text() == "the host's file"  # removed the links, not what they pointed at
    assert (elsewhere / "inside.txt").exists()


def test_s3_errors_are_transfer_errors_naming_the_object(transfer: BatchTransfer, tmp_path: Path) -> None:
    inputs = tmp_path / "Inputs"
    inputs.mkdir()
    with pytest.raises(TransferError, match=r"\(downloading s3://transfer-input/jobs/in/gone.txt\)"):
        transfer.download(assignment("a.txt", "gone.txt"), inputs)
    outputs = tmp_path / "Outputs"
    outputs.mkdir()
    (outputs / "x.out").write_text("X")
    with pytest.raises(TransferError, match=r"\(uploading s3://no-such-bucket/jobs/out/run-1/x.out\)"):
        transfer.upload(assignment("a.txt", output_bucket="no-such-bucket"), outputs)


def test_a_halt_between_two_files_stops_the_transfer(transfer: BatchTransfer, tmp_path: Path) -> None:
    inputs = tmp_path / "Inputs"
    inputs.mkdir()
    calls = iter([False, True])
    with pytest.raises(TransferHalted):
        transfer.download(assignment("a.txt", "b.txt"), inputs, lambda: next(calls))
    assert [p.name for p in inputs.iterdir()] == ["a.txt"]


def test_clear_empties_a_directory_and_makes_a_missing_one(tmp_path: Path) -> None:
    directory = tmp_path / "batch" / "Inputs"
    clear(directory)
    assert directory.is_dir()
    (directory / "sub").mkdir()
    (directory / "sub" / "f").write_text("x")
    (directory / "g").write_text("y")
    clear(directory)
    assert list(directory.iterdir()) == []
