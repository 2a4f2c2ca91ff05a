"""Every environment variable a spothub function is given by the stacks, with a placeholder of the right
shape: what importing a handler outside Lambda needs (the cold import benchmark, the OpenAPI document).
No call leaves the process at import, so the placeholders are never used to reach AWS."""

from __future__ import annotations

ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:spothub-placeholder"
PLACEHOLDER_ENVIRONMENT = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "placeholder",
    "AWS_SECRET_ACCESS_KEY": "placeholder",
    "POWERTOOLS_SERVICE_NAME": "placeholder",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_NAMESPACE": "Spothub",
    "SPOTHUB_PREFIX": "spothub",
    "SPOTHUB_VERSION": "0.0.0",
    "SPOTHUB_HUB_REGION": "us-east-1",
    "SPOTHUB_WORKER_REGIONS": "us-west-2,eu-west-1",
    "SPOTHUB_STATE_TABLE": "spothub-state",
    "SPOTHUB_JOBS_TABLE": "spothub-jobs",
    "SPOTHUB_CAPACITY_FALLBACK": "on-demand",
    "SPOTHUB_HUB_BUS": "spothub-hub",
    "SPOTHUB_WORKER_BUS": "spothub-worker",
    "SPOTHUB_ORCHESTRATOR_ARN": ARN,
    "SPOTHUB_LAUNCH_STATE_MACHINE_ARN": ARN,
    "SPOTHUB_TEARDOWN_STATE_MACHINE_ARN": ARN,
    "SPOTHUB_LISTING_STATE_MACHINE_ARN": ARN,
    "SPOTHUB_ACTIVE_INSTANCE_PARAMETER": "/spothub/spothub/active-instance",
    "SPOTHUB_ALERTS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:spothub-alerts",
    "SPOTHUB_JOBS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:spothub-jobs",
    "SPOTHUB_INSTANCE_TYPES": "g5.xlarge,g6.xlarge",
    "SPOTHUB_BATCH_INSTANCE_TYPES": "g5.xlarge,g6.xlarge",
    "SPOTHUB_BATCH_INPUT_BUCKETS": "inputs",
    "SPOTHUB_BATCH_OUTPUT_BUCKETS": "outputs",
    "SPOTHUB_BATCH_LAUNCH_TEMPLATE_ID": "lt-0123456789abcdef0",
    "SPOTHUB_BATCH_SUBNETS": "subnet-0123456789abcdef0",
    "SPOTHUB_BATCH_MAX_WORKERS": "20",
    "SPOTHUB_SPOT_FINDER_FUNCTION": "spothub-spot-finder",
    "SPOTHUB_GROUP_NAME": "spothub-gpu",
    "SPOTHUB_CLUSTER_NAME": "spothub-gpu",
    "SPOTHUB_TASK_DEFINITION": "spothub-serving",
    "SPOTHUB_SERVING_PORT": "8000",
    "SPOTHUB_SERVING_PUBLIC_IP": "true",
}
