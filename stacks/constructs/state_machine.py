"""A state machine from `statemachines/<name>.asl.json`, with substitutions, logs and tracing.

ARNs and names are CloudFormation DefinitionSubstitutions. Numbers (wait seconds, timeouts, poll
caps) are written in the file as quoted placeholders ("${PollSeconds}") so the file stays valid JSON
for linters and diffs; they are put in as numbers here, at synthesis.
"""

from __future__ import annotations

import json
import re

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from stacks.paths import STATEMACHINES_DIR

_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
VENDED_LOGS_PREFIX = "/aws/vendedlogs/states/"


def load_definition(name: str, numbers: dict[str, int]) -> str:
    text = (STATEMACHINES_DIR / f"{name}.asl.json").read_text()
    json.loads(text)  # a broken file fails synthesis here, not at deployment
    for key, value in numbers.items():
        text = text.replace(f'"${{{key}}}"', str(int(value)))
    return text


def placeholders(name: str) -> set[str]:
    return set(_PLACEHOLDER.findall((STATEMACHINES_DIR / f"{name}.asl.json").read_text()))


class SpothubStateMachine(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        state_machine_name: str,
        substitutions: dict[str, str],
        numbers: dict[str, int],
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        missing = placeholders(name) - set(substitutions) - set(numbers)
        if missing:
            raise ValueError(f"statemachines/{name}.asl.json needs substitutions for {sorted(missing)}")
        # Under /aws/vendedlogs/: CloudWatch Logs then needs no resource policy statement for Step Functions'
        # log delivery; outside it, every log group grows the account's one policy (5,120 characters at most).
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            log_group_name=f"{VENDED_LOGS_PREFIX}{state_machine_name}",
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_name=state_machine_name,
            definition_body=sfn.DefinitionBody.from_string(load_definition(name, numbers)),
            definition_substitutions=substitutions,
            state_machine_type=sfn.StateMachineType.STANDARD,
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
