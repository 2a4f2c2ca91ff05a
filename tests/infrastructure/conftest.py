from __future__ import annotations

import json

import pytest

from tests.infrastructure.synth import REFERENCE_CONTEXT, Synthesized, synthesize

# Every deployment the fixtures below synthesize, by fixture name: what cfn-lint and cdk-nag look at.
DEPLOYMENTS = ("reference", "hub_as_worker", "serving", "operator_vpc", "search", "search_in_hub")

# Batch jobs: two input buckets, one output bucket, an address told of every job, an SES sender.
BATCH_CONTEXT = {
    "batchInputBuckets": "spothub-inputs,team.raw-data",
    "batchOutputBuckets": "spothub-outputs",
    "jobsNotifyEmail": "jobs@example.com",
    "jobsSesSender": "spothub@example.com",
}


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Hub in us-east-1, workers in us-west-2 and eu-west-1, alerts by e-mail, a stable DNS name, batch buckets."""
    context = {
        **REFERENCE_CONTEXT,
        **BATCH_CONTEXT,
        "alertEmail": "oncall@example.com",
        "hostedZoneId": "Z0123456789ABCDEFGHIJ",
        "endpointName": "gpu.example.com",
    }
    return synthesize(tmp_path_factory.mktemp("reference"), context)


@pytest.fixture(scope="session")
def hub_as_worker(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """The hub region is also the only worker, in an existing VPC, with an account named."""
    context = {
        "prefix": "gpu-prod",
        "hubRegion": "us-east-1",
        "workerRegions": "",
        "hubAsWorker": "true",
        "account": "123456789012",
        "instanceTypes": "p4d.24xlarge,p5.48xlarge",
        "capacityFallback": "none",
        "vpcs": json.dumps(
            {"us-east-1": {"vpcId": "vpc-0123456789abcdef0", "subnetIds": ["subnet-0aaa1111", "subnet-0bbb2222"]}}
        ),
    }
    return synthesize(tmp_path_factory.mktemp("hub-as-worker"), context)


# The serving keys set, in the reference regions: who may reach the model, another preset, port and health path,
# a token by reference (a name, and a complete ARN in another region).
SERVING_CONTEXT = {
    **REFERENCE_CONTEXT,
    "servingPreset": "sglang",
    "servingModel": "meta-llama/Llama-3.1-8B-Instruct",
    "servingPort": "9000",
    "servingHealthPath": "/ready",
    "servingStartPeriod": "120",
    "servingArgs": "--mem-fraction-static 0.85 --served-model-name llama",
    "servingEnv": json.dumps({"TOKENIZERS_PARALLELISM": "false"}),
    "servingSecrets": json.dumps(
        {
            "HF_TOKEN": "team/hf-token",
            "EXTRA_CREDENTIALS": "arn:aws:secretsmanager:us-east-1:123456789012:secret:team/extra-AbC123",
        }
    ),
    "servingIngressCidrs": "203.0.113.0/24,2001:db8::/48",
    "servingIngressPrefixLists": json.dumps({"us-west-2": ["pl-0123456789abcdef0"]}),
    "servingIngressSecurityGroups": json.dumps({"eu-west-1": ["sg-0123456789abcdef0", "sg-0fedcba9876543210"]}),
}


@pytest.fixture(scope="session")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(tmp_path_factory.mktemp("serving"), SERVING_CONTEXT)


# The operator's own VPCs without public addresses, their own API key secret, a model on four GPUs.
OPERATOR_VPC_CONTEXT = {
    "hubRegion": "us-east-1",
    "workerRegions": "us-west-2",
    "hubAsWorker": "true",
    "instanceTypes": "g5.12xlarge,g6e.12xlarge",
    "servingGpus": "4",
    "servingPublicIp": "false",
    "servingApiKeySecret": "platform/model-key",
    "vpcs": json.dumps(
        {
            "us-east-1": {"vpcId": "vpc-0123456789abcdef0", "subnetIds": ["subnet-0aaa1111"]},
            "us-west-2": {"vpcId": "vpc-0fedcba987654321f", "subnetIds": ["subnet-0ccc3333"]},
        }
    ),
}


@pytest.fixture(scope="session")
def operator_vpc(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(tmp_path_factory.mktemp("operator-vpc"), OPERATOR_VPC_CONTEXT)


# The search instance as the sandbox deploys it: the volume in us-west-2 (one of the two worker regions), a spot
# price cap, the reference regions otherwise.
SEARCH_VOLUME_ID = "vol-0dec0de5eadc0ffee"
SEARCH_CONTEXT = {
    **REFERENCE_CONTEXT,
    "searchVolumeId": SEARCH_VOLUME_ID,
    "searchRegion": "us-west-2",
    "searchImage": "ghcr.io/example/semantic-search:1.4",
    "searchSpotMaxPrice": "0.45",
}


@pytest.fixture(scope="session")
def search(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(tmp_path_factory.mktemp("search"), SEARCH_CONTEXT)


# The search instance in the hub region (also the only worker), in the operator's VPC, on-demand only, with every
# search key set.
SEARCH_IN_HUB_CONTEXT = {
    "prefix": "gpu-prod",
    "hubRegion": "us-east-1",
    "workerRegions": "",
    "hubAsWorker": "true",
    "account": "123456789012",
    "vpcs": json.dumps(
        {"us-east-1": {"vpcId": "vpc-0123456789abcdef0", "subnetIds": ["subnet-0aaa1111", "subnet-0bbb2222"]}}
    ),
    "searchVolumeId": "vol-0123456789abcdef0",
    "searchInstanceType": "g6.2xlarge",
    "searchUseSpot": "false",
    "searchIdleTimeout": "600",
    "searchMaxRuntime": "0",
    "searchHealthInterval": "120",
    "searchPort": "9200",
    "searchImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/search:2",
    "searchHealthPath": "/ready",
}


@pytest.fixture(scope="session")
def search_in_hub(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    return synthesize(tmp_path_factory.mktemp("search-in-hub"), SEARCH_IN_HUB_CONTEXT)
