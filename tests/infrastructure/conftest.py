from __future__ import annotations

import json

import pytest

from tests.infrastructure.synth import REFERENCE_CONTEXT, Synthesized, synthesize


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    """Hub in us-east-1, workers in us-west-2 and eu-west-1, alerts by e-mail, a stable DNS name."""
    context = {
        **REFERENCE_CONTEXT,
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
