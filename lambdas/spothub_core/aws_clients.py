"""boto3 clients and DynamoDB tables that a handler declares at import and builds when first used.

A client costs tens of milliseconds to build (botocore reads its service model), and a function builds several
of which one event uses one or two: building them at import made every cold start pay for all of them. Each
object builds its own client once and keeps it for the life of the execution environment; nothing is shared
between objects, so a handler imported afresh (a cold start, or a test's) gets new clients, and the client is
built from boto3's default session of that moment (the sandbox gives each function its own).

boto3 itself is imported here, at import: every invocation calls AWS, so deferring it would only move its cost
into the first event.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache
from typing import Any

import boto3


class Deferred:
    """Stands for the object `build` returns: built at the first attribute read, then every read goes to it."""

    __slots__ = ("_build", "_built", "_lock", "_what")

    def __init__(self, what: str, build: Callable[[], Any]) -> None:
        self._what = what
        self._build = build
        self._built: Any = None
        self._lock = threading.Lock()

    def built(self) -> Any:
        if self._built is None:
            with self._lock:
                if self._built is None:
                    self._built = self._build()
        return self._built

    @property
    def is_built(self) -> bool:
        return self._built is not None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.built(), name)

    def __repr__(self) -> str:
        return f"<{self._what}, {'built' if self.is_built else 'not built yet'}>"


def client(service: str, **options: Any) -> Any:
    """`boto3.client(service, **options)`, built when first used."""
    return Deferred(f"{service} client", lambda: boto3.client(service, **options))  # type: ignore[call-overload]


def per_region(service: str, **options: Any) -> Callable[[str], Any]:
    """A function giving `client(service, region_name=region, **options)`: one client per region asked for, each built
    when first used (the hub calls EC2 in every worker region)."""
    return cache(lambda region: client(service, region_name=region, **options))


def resource(service: str, **options: Any) -> Any:
    """`boto3.resource(service, **options)`, built when first used: one for all of a function's tables."""
    return Deferred(f"{service} resource", lambda: boto3.resource(service, **options))  # type: ignore[call-overload]


def table(name: str, dynamodb: Any = None) -> Any:
    """The DynamoDB table `name` of `dynamodb` (a `resource("dynamodb")` that the function's tables share) or of a
    resource of its own, built when first used."""
    return Deferred(f"table {name}", lambda: (dynamodb or boto3.resource("dynamodb")).Table(name))
