"""Who is calling: one access key per principal, so the emulator can tell callers apart.

On AWS a Lambda function, a state machine, an EventBridge target and an instance each call with
temporary credentials of their own role. The sandbox hands each its own access key (derived from
the role and the session name, so a key is stable across restarts) and keeps the map back from key
to principal. The sandbox's own key (the deployer, the tests, the operator) is the administrator.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass

from spothub.sandbox.iam.evaluator import Caller

SECRET_ACCESS_KEY = "sandbox-role-secret"  # noqa: S105 - the emulator checks no secrets


@dataclass(frozen=True)
class RoleSession:
    role_arn: str
    session_name: str

    @property
    def caller(self) -> Caller:
        account = self.role_arn.split(":")[4]
        partition = self.role_arn.split(":")[1]
        role_name = self.role_arn.rsplit("/", 1)[-1]
        return Caller(
            arn=f"arn:{partition}:sts::{account}:assumed-role/{role_name}/{self.session_name}", role_arn=self.role_arn
        )


def _access_key(session: RoleSession) -> str:
    digest = hashlib.sha256(f"{session.role_arn}|{session.session_name}".encode()).digest()
    return "ASIA" + base64.b32encode(digest).decode()[:16]


class Principals:
    def __init__(self, admin_access_key_id: str) -> None:
        self.admin_access_key_id = admin_access_key_id
        self._sessions: dict[str, RoleSession] = {}
        self._lock = threading.Lock()

    def credentials_for(self, role_arn: str, session_name: str) -> dict[str, str]:
        """Environment variables that make an SDK call as `role_arn` (session `session_name`)."""
        session = RoleSession(role_arn, session_name[:64])
        key = _access_key(session)
        with self._lock:
            self._sessions[key] = session
        return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY, "AWS_SESSION_TOKEN": ""}

    def session(self, access_key_id: str) -> RoleSession | None:
        """The role session behind a key; None for the administrator's key and for keys never issued."""
        with self._lock:
            return self._sessions.get(access_key_id)

    def is_admin(self, access_key_id: str) -> bool:
        return access_key_id == self.admin_access_key_id
