"""One Logger, Tracer and Metrics per process, configured from the POWERTOOLS_* environment."""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics, Tracer

from spothub_core.contracts import METRICS_NAMESPACE

logger = Logger()
tracer = Tracer()
metrics = Metrics(namespace=METRICS_NAMESPACE)
