"""The model endpoint's API key: a Secrets Manager secret generated at deployment (no value in any template),
replicated to every worker region other than the hub's, so the serving task of any region, and the one
that replaces it after a failover, starts with the same key. With servingApiKeySecret the operator's secret
is used instead and nothing is generated; either way the hub publishes where the key is in SSM."""

from __future__ import annotations

from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from stacks.config import SpothubConfig
from stacks.nag import acknowledge

# Letters and digits only: the key goes into an HTTP header and, for the sglang preset, a shell word.
API_KEY_LENGTH = 40


class ModelApiKey(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: SpothubConfig) -> None:
        super().__init__(scope, construct_id)
        self.secret_name = config.api_key_secret_name
        self.secret: secretsmanager.Secret | None = None
        if not config.generates_api_key:
            return
        self.secret = secretsmanager.Secret(
            self,
            "Secret",
            secret_name=self.secret_name,
            description=f"spothub {config.prefix}: the API key of the model endpoint (Authorization: Bearer <key>)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                exclude_punctuation=True, password_length=API_KEY_LENGTH
            ),
            replica_regions=[
                secretsmanager.ReplicaRegion(region=region)
                for region in config.deployed_worker_regions
                if region != config.hub_region
            ],
        )
        acknowledge(
            self.secret,
            "AwsSolutions-SMG4",
            "The model server reads the key once, when its task starts; a rotation Lambda would change it under a "
            "running server. Rotate by putting a new value (aws secretsmanager put-secret-value, replicated to every "
            "worker region) and replacing the replica.",
        )
