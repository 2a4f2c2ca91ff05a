"""Lambda execution without Docker: the function's real handler, run in this process.

The handler is found from the function's `Handler` and its deployed code (the zip the emulator
holds), imported with the function's environment, and called with a Lambda-like context. Each
function keeps its own copy of the modules it imported, so module-level state (settings read at
cold start, clients) is per function as on AWS. An exception becomes a function error shaped as
AWS reports it (`X-Amz-Function-Error: Unhandled`, `{"errorMessage", "errorType", "stackTrace"}`),
so Step Functions `Retry`/`Catch` on error names behave as on AWS.

Invocations are serialized (concurrency 1): the process environment and `sys.modules` are
swapped per call. A function that invokes another synchronously (RequestResponse, signed with its own
role session) waits for the answer: the callee runs inside the caller's turn, nested, its environment
and modules swapped over the caller's and back. The layer's files are not imported (they are built for
Lambda's platform); the sandbox's own environment provides the same pinned requirements.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3

from spothub.sandbox import hops

# One invocation at a time, re-entrant so a cold start inside an invocation does not deadlock.
_INVOCATION_LOCK = threading.RLock()
# Per thread, the functions whose handlers run in it now (innermost last): what the network model asks about a
# connection a handler opens (its VPC configuration; see instance_network.py).
_THREAD = threading.local()


def current_function() -> Any | None:
    """The moto LambdaFunction whose handler runs in this thread now, or None outside any invocation."""
    running = getattr(_THREAD, "functions", None)
    return running[-1] if running else None


def _snapshot_items(self: Any) -> list[tuple[str, str]]:
    # list() of a dict's items is atomic under the GIL: no key can go between listing it and reading it.
    return [(self.decodekey(key), self.decodevalue(value)) for key, value in list(self._data.items())]


def _snapshot_copy(self: Any) -> dict[str, str]:
    return dict(_snapshot_items(self))


# An invocation adds its function's variables and removes them after. Readers in other threads that walk the
# whole environment (urllib's getproxies_environment, for every requests call and every botocore client made;
# os.environ.copy()) would list a key, then fail to read it once it is gone: KeyError. They read a snapshot.
type(os.environ).items = _snapshot_items  # type: ignore[assignment,method-assign]
type(os.environ).copy = _snapshot_copy  # type: ignore[method-assign]


@dataclass
class Invocation:
    function_name: str
    request_id: str
    started: float
    duration_ms: float
    error_type: str | None


@dataclass
class LambdaContext:
    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline: float

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


@dataclass
class FunctionRuntime:
    """One deployed function: where its code is, what environment it runs with, its own modules."""

    name: str
    arn: str
    handler: str
    code_dir: Path
    environment: dict[str, str]
    timeout_s: float
    memory_mb: int
    modules: dict[str, ModuleType] | None = None
    handler_callable: Any = None
    top_level: set[str] = field(default_factory=set)
    boto3_session: Any = None
    vpc_config: Any = None  # the function's VpcConfig when this runtime was made


class LambdaRuntime:
    """Runs functions deployed in the emulator; `base_environment` is what every function sees
    beneath its own variables (the emulator endpoint, credentials)."""

    def __init__(
        self,
        work_dir: Path,
        base_environment: dict[str, str],
        credentials: Callable[[str, str], dict[str, str]] | None = None,
    ) -> None:
        self._work_dir = work_dir
        self._base_environment = base_environment
        # (role ARN, session name) -> the variables that make the function's SDK calls as its own role.
        self._credentials = credentials
        self._functions: dict[str, FunctionRuntime] = {}
        self.invocations: list[Invocation] = []
        # The functions running now, outermost first: more than one only while a caller waits on its callee.
        self._running: list[str] = []

    def _code_dir(self, code: bytes) -> Path:
        digest = hashlib.sha256(code).hexdigest()[:16]
        target = self._work_dir / "lambda-code" / digest
        if not target.is_dir():
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f"{digest}.", dir=target.parent))
            with zipfile.ZipFile(io.BytesIO(code)) as archive:
                archive.extractall(staging)
            try:
                staging.rename(target)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                if not target.is_dir():  # not a lost race: a real failure
                    raise
        return target

    def runtime_for(self, function: Any) -> FunctionRuntime:
        """The runtime of a moto LambdaFunction, rebuilt when its code or configuration changed."""
        environment = {
            **self._base_environment,
            "AWS_REGION": function.region,
            "AWS_DEFAULT_REGION": function.region,
            "AWS_LAMBDA_FUNCTION_NAME": function.function_name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(function.memory_size),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function.function_name}",
            "_HANDLER": function.handler,
            **{k: str(v) for k, v in function.environment_vars.items()},
            **(self._credentials(function.role, function.function_name) if self._credentials else {}),
        }
        code_dir = self._code_dir(function.code_bytes)
        current = self._functions.get(function.function_arn)
        vpc_config = getattr(function, "_vpc_config", None)
        # A changed configuration means new execution environments on Lambda: a cold start, nothing kept (the
        # connections a warm function holds to addresses in its VPC included).
        if (
            current is None
            or current.code_dir != code_dir
            or current.environment != environment
            or current.handler != function.handler
            or current.vpc_config != vpc_config
        ):
            current = FunctionRuntime(
                name=function.function_name,
                arn=function.function_arn,
                handler=function.handler,
                code_dir=code_dir,
                environment=environment,
                timeout_s=float(function.timeout),
                memory_mb=int(function.memory_size),
                top_level={p.name.removesuffix(".py") for p in code_dir.iterdir()},
                vpc_config=copy.deepcopy(vpc_config),
            )
            self._functions[function.function_arn] = current
        return current

    def is_running(self, session_name: str) -> bool:
        """Whether the innermost function running now is the one whose role session is named so."""
        running = list(self._running)
        return bool(running) and running[-1][:64] == session_name

    @staticmethod
    def wait_for_turn() -> None:
        """Return once the invocation in progress (if any) has ended: what it read before, it has written."""
        with _INVOCATION_LOCK:
            pass

    def invoke(self, function: Any, event: Any, *, on_behalf_of: str | None = None) -> tuple[bytes, str | None]:
        """Run the handler on `event`; returns (payload, function error or None). `on_behalf_of`: the session
        name (a function's name) of the role session that asked, for a synchronous invocation."""
        # The running function asks for this one and waits for the answer, holding the turn in its own thread.
        nested = on_behalf_of is not None and self.is_running(on_behalf_of)
        with contextlib.nullcontext() if nested else _INVOCATION_LOCK:
            self._running.append(function.function_name)
            in_thread = getattr(_THREAD, "functions", None)
            if in_thread is None:
                in_thread = _THREAD.functions = []
            in_thread.append(function)
            try:
                with hops.invocation(function.function_name, event):
                    return self._invoke(function, event)
            finally:
                in_thread.pop()
                self._running.pop()

    def _invoke(self, function: Any, event: Any) -> tuple[bytes, str | None]:
        request_id = str(uuid.uuid4())
        runtime = self.runtime_for(function)
        started = time.monotonic()
        context = LambdaContext(
            function_name=runtime.name,
            function_version="$LATEST",
            invoked_function_arn=runtime.arn,
            memory_limit_in_mb=runtime.memory_mb,
            aws_request_id=request_id,
            log_group_name=f"/aws/lambda/{runtime.name}",
            log_stream_name=f"sandbox/{request_id}",
            deadline=started + runtime.timeout_s,
        )
        error_type: str | None = None
        with _environment(runtime.environment), _modules_of(runtime), _boto3_session_of(runtime):
            try:
                handler = _load_handler(runtime)
                result = handler(event, context)
                payload = json.dumps(result).encode() if result is not None else b"null"
            except Exception as exc:
                error_type = type(exc).__name__
                payload = json.dumps(
                    {
                        "errorMessage": str(exc),
                        "errorType": error_type,
                        "requestId": request_id,
                        "stackTrace": traceback.format_exception(exc)[1:],
                    }
                ).encode()
        elapsed = time.monotonic() - started
        if error_type is None and elapsed > runtime.timeout_s:
            error_type = "Sandbox.Timedout"  # the error name Step Functions sees for a Lambda timeout
            payload = json.dumps(
                {
                    "errorMessage": f"{request_id} Task timed out after {runtime.timeout_s:.2f} seconds",
                    "errorType": error_type,
                }
            ).encode()
        self.invocations.append(Invocation(runtime.name, request_id, time.time(), round(elapsed * 1000, 2), error_type))
        return payload, ("Unhandled" if error_type else None)


def _load_handler(runtime: FunctionRuntime) -> Any:
    if runtime.handler_callable is None:
        module_name, _, attribute = runtime.handler.rpartition(".")
        module = importlib.import_module(module_name)
        runtime.handler_callable = getattr(module, attribute)
    return runtime.handler_callable


class _environment:
    """The function's variables for the length of an invocation. Only those keys change and come back:
    other threads (moto's, botocore's config lookups: `if key in environ: environ[key]`) read the
    environment meanwhile, so it is never cleared, not even for an instant."""

    def __init__(self, variables: dict[str, str]) -> None:
        self._variables = variables
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        self._saved = {key: os.environ.get(key) for key in self._variables}
        os.environ.update(self._variables)

    def __exit__(self, *_exc: object) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _boto3_session_of:
    """Give the function its own boto3 default session: boto3 caches the credentials it resolves in it, and a
    function's SDK calls must carry the function's own role (see spothub.sandbox.iam.principals)."""

    def __init__(self, runtime: FunctionRuntime) -> None:
        self._runtime = runtime
        self._outside: Any = None

    def __enter__(self) -> None:
        self._outside = boto3.DEFAULT_SESSION
        if self._runtime.boto3_session is None:
            # Made now, with the function's variables in place: a boto3.client() of another thread meanwhile
            # finds a session and never builds one from an environment being swapped under it.
            self._runtime.boto3_session = boto3.session.Session()
        boto3.DEFAULT_SESSION = self._runtime.boto3_session

    def __exit__(self, *_exc: object) -> None:
        self._runtime.boto3_session = boto3.DEFAULT_SESSION
        boto3.DEFAULT_SESSION = self._outside


class _modules_of:
    """Give the function its own modules for its code's top-level packages, and take them back."""

    def __init__(self, runtime: FunctionRuntime) -> None:
        self._runtime = runtime
        self._outside: dict[str, ModuleType] = {}

    def _owned(self, name: str) -> bool:
        return name.split(".", 1)[0] in self._runtime.top_level

    def __enter__(self) -> None:
        self._outside = {name: module for name, module in sys.modules.items() if self._owned(name)}
        for name in self._outside:
            del sys.modules[name]
        sys.modules.update(self._runtime.modules or {})
        sys.path.insert(0, str(self._runtime.code_dir))
        importlib.invalidate_caches()

    def __exit__(self, *_exc: object) -> None:
        self._runtime.modules = {name: module for name, module in sys.modules.items() if self._owned(name)}
        for name in self._runtime.modules:
            del sys.modules[name]
        sys.modules.update(self._outside)
        sys.path.remove(str(self._runtime.code_dir))
