"""One Logger, Tracer and Metrics per process, configured from the POWERTOOLS_* environment."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Generator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.shared import constants
from aws_lambda_powertools.shared.functions import strtobool
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

from spothub_core.contracts import METRICS_NAMESPACE


class _NoSegment(BaseSegment):
    def close(self, end_time: int | None = None) -> None:
        pass

    def add_subsegment(self, subsegment: Any) -> None:
        pass

    def remove_subsegment(self, subsegment: Any) -> None:
        pass

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        pass


class NoTracing(BaseProvider):
    """The Tracer's provider where tracing is off. Powertools' default provider is the X-Ray SDK's recorder, built
    even for a disabled Tracer, and outside Lambda that recorder builds a botocore client for the X-Ray daemon:
    about 130 ms of every cold import, for traces nobody sends."""

    @contextmanager
    def in_subsegment(self, name: str | None = None, **kwargs: Any) -> Generator[BaseSegment, None, None]:
        yield _NoSegment()

    @asynccontextmanager
    async def in_subsegment_async(self, name: str | None = None, **kwargs: Any) -> AsyncGenerator[BaseSegment, None]:
        yield _NoSegment()

    def put_annotation(self, key: str, value: Any) -> None:
        pass

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        pass

    def patch(self, modules: Sequence[str]) -> None:
        pass

    def patch_all(self) -> None:
        pass


def tracing_is_off() -> bool:
    """Powertools' own rule (`Tracer._is_tracer_disabled`): off when POWERTOOLS_TRACE_DISABLED says so, and outside
    Lambda or in its local emulators (SAM, Chalice), where no X-Ray daemon listens."""
    if strtobool(os.getenv(constants.TRACER_DISABLED_ENV, "false")):
        return True
    in_lambda = bool(os.getenv(constants.LAMBDA_TASK_ROOT_ENV))
    emulated = bool(os.getenv(constants.SAM_LOCAL_ENV) or os.getenv(constants.CHALICE_LOCAL_ENV))
    return not in_lambda or emulated


logger = Logger()
# In Lambda with tracing on (the stacks' `Tracing.ACTIVE`) this is powertools' X-Ray Tracer, as before.
tracer = Tracer(disabled=True, provider=NoTracing()) if tracing_is_off() else Tracer()
metrics = Metrics(namespace=METRICS_NAMESPACE)
