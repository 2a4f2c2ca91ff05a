"""The hub's REST API: AWS_IAM on every route, request validation, access logs, throttling, X-Ray.

Routes are added with `add_route`, which is the only way a method gets onto the API, so no route
can be added without IAM authorization and the request validator.
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct
from pydantic import BaseModel

from stacks.constructs.api_models import api_gateway_schema
from stacks.nag import acknowledge

STAGE_NAME = "v1"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function_name: str


class SpothubRestApi(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        prefix: str,
        log_retention: logs.RetentionDays,
        rate_limit: float = 50,
        burst_limit: int = 100,
    ) -> None:
        super().__init__(scope, construct_id)
        self.routes: list[Route] = []
        access_logs = logs.LogGroup(self, "AccessLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"{prefix}-api",
            description="spothub control plane API (AWS_IAM authorization on every route)",
            endpoint_configuration=apigw.EndpointConfiguration(types=[apigw.EndpointType.REGIONAL]),
            # The account-level role API Gateway needs to write access logs; kept when the stack
            # goes because other APIs in the account may rely on the same setting.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            default_method_options=apigw.MethodOptions(authorization_type=apigw.AuthorizationType.IAM),
            deploy_options=apigw.StageOptions(
                stage_name=STAGE_NAME,
                access_log_destination=apigw.LogGroupLogDestination(access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                metrics_enabled=True,
                tracing_enabled=True,
                throttling_rate_limit=rate_limit,
                throttling_burst_limit=burst_limit,
            ),
        )
        self.validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        for response_type in (apigw.ResponseType.DEFAULT_4_XX, apigw.ResponseType.DEFAULT_5_XX):
            self.api.add_gateway_response(
                f"Json{response_type.response_type}",
                type=response_type,
                templates={
                    "application/json": '{"error": $context.error.messageString, "request_id": "$context.requestId"}'
                },
            )
        acknowledge(
            self.api,
            "AwsSolutions-APIG3",
            "Callers are IAM principals of the account and the stage is throttled; "
            "a WAF web ACL would bill every month while the control plane is idle.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-COG4",
            "Every route uses AWS_IAM authorization (SigV4), asserted by the infrastructure tests.",
        )
        acknowledge(
            self.api,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]",
            "The AWS-maintained policy of the account-level role API Gateway uses to write access logs.",
        )

    def add_route(
        self,
        method: str,
        path: str,
        function: lambda_.IFunction,
        *,
        request_model: type[BaseModel] | None = None,
    ) -> apigw.Method:
        """Proxy `method path` to `function`, behind AWS_IAM authorization and request validation;
        with `request_model`, API Gateway also checks the JSON body against it."""
        resource = self.api.root.resource_for_path(path)
        request_models = None
        model_resource = None
        if request_model is not None:
            name = request_model.__name__
            model_resource = apigw.CfnModel(
                self,
                f"Model{name}",
                rest_api_id=self.api.rest_api_id,
                content_type="application/json",
                name=name,
                schema=api_gateway_schema(request_model),
            )
            request_models = {"application/json": apigw.Model.from_model_name(self, f"Model{name}Ref", name)}
        added = resource.add_method(
            method,
            apigw.LambdaIntegration(function, proxy=True),
            authorization_type=apigw.AuthorizationType.IAM,
            request_validator=self.validator,
            request_models=request_models,
        )
        if model_resource is not None:
            added.node.add_dependency(model_resource)
        self.routes.append(Route(method, path, function.node.path))
        return added

    @property
    def url(self) -> str:
        return self.api.url
