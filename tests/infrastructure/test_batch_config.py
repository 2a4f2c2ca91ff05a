"""The batch context keys (stacks/config.py): defaults, both context forms, and one clear line per mistake."""

from __future__ import annotations

import pytest

from stacks.config import ConfigError, SpothubConfig, context_keys


def test_batch_defaults_refuse_every_job_until_buckets_are_named() -> None:
    config = SpothubConfig.from_context({})
    assert config.batch_input_buckets == []
    assert config.batch_output_buckets == []
    assert config.batch_worker_instance_types == config.instance_types
    assert config.batch_max_workers_per_region == 20
    assert config.jobs_notify_email is None
    assert config.jobs_ses_sender is None
    assert config.jobs_ses_identities == []


def test_batch_keys_are_context_keys() -> None:
    assert {
        "batchInputBuckets",
        "batchOutputBuckets",
        "batchInstanceTypes",
        "batchMaxWorkersPerRegion",
        "jobsNotifyEmail",
        "jobsSesSender",
    } <= set(context_keys())


def test_command_line_strings_and_cdk_json_values_mean_the_same() -> None:
    from_cli = SpothubConfig.from_context(
        {
            "batchInputBuckets": "in-a, in.b",
            "batchOutputBuckets": '["out-x"]',
            "batchInstanceTypes": "g6e.2xlarge,g6.2xlarge",
            "batchMaxWorkersPerRegion": "50",
        }
    )
    from_json = SpothubConfig.from_context(
        {
            "batchInputBuckets": ["in-a", "in.b"],
            "batchOutputBuckets": ["out-x"],
            "batchInstanceTypes": ["g6e.2xlarge", "g6.2xlarge"],
            "batchMaxWorkersPerRegion": 50,
        }
    )
    assert from_cli == from_json
    assert from_cli.batch_input_buckets == ["in-a", "in.b"]
    assert from_cli.batch_worker_instance_types == ["g6e.2xlarge", "g6.2xlarge"]


def test_an_empty_batch_instance_types_means_instance_types() -> None:
    config = SpothubConfig.from_context({"batchInstanceTypes": "", "instanceTypes": "p5.48xlarge"})
    assert config.batch_instance_types is None
    assert config.batch_worker_instance_types == ["p5.48xlarge"]


def test_the_ses_sender_may_be_verified_as_the_address_or_its_domain() -> None:
    config = SpothubConfig.from_context({"jobsSesSender": "spothub@mail.example.com"})
    assert config.jobs_ses_identities == ["spothub@mail.example.com", "mail.example.com"]


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"batchInputBuckets": "My_Bucket"}, "context key 'batchInputBuckets': 'My_Bucket' is not an S3 bucket name"),
        ({"batchInputBuckets": "a..b"}, "'a..b' is not an S3 bucket name"),
        ({"batchOutputBuckets": "192.168.0.1"}, "'192.168.0.1' is not an S3 bucket name"),
        ({"batchOutputBuckets": "ab"}, "'ab' is not an S3 bucket name"),
        ({"batchOutputBuckets": "out-x,out-x"}, "context key 'batchOutputBuckets': lists out-x more than once"),
        ({"batchInstanceTypes": "g5"}, "context key 'batchInstanceTypes': 'g5' is not an EC2 instance type name"),
        ({"batchMaxWorkersPerRegion": "0"}, "context key 'batchMaxWorkersPerRegion'"),
        ({"batchMaxWorkersPerRegion": "501"}, "context key 'batchMaxWorkersPerRegion'"),
        ({"jobsNotifyEmail": "nobody"}, "context key 'jobsNotifyEmail': 'nobody' is not an e-mail address"),
        ({"jobsSesSender": "example.com"}, "context key 'jobsSesSender': 'example.com' is not an e-mail address"),
        ({"batchInputBucket": "x"}, "unknown context key 'batchInputBucket' (did you mean 'batchInputBuckets'?)"),
    ],
)
def test_bad_batch_context_fails_with_one_clear_line(context: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        SpothubConfig.from_context(context)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
