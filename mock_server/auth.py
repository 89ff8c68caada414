"""HTTP Basic authentication and OCP's permissions.

Users come from a YAML or JSON file (`users: [{name, password, permissions: [...]}]`) or the defaults below.
Each operation names the permission it needs in the spec (`x-ocp-permission`).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from pathlib import Path

import yaml

from .envelope import forbidden, unauthenticated

TASK_MANAGER = "TASK_MANAGER"
TASK_VIEWER = "TASK_VIEWER"
KNOWN_PERMISSIONS = frozenset({TASK_MANAGER, TASK_VIEWER})
_CACHE_LIMIT = 256


@dataclass(frozen=True)
class User:
    name: str
    password: str
    permissions: frozenset

    def can(self, permission: str | None) -> bool:
        return permission is None or permission in self.permissions


DEFAULT_USERS = (
    User("admin", "admin", frozenset({TASK_MANAGER, TASK_VIEWER})),
    User("viewer", "viewer", frozenset({TASK_VIEWER})),
)
ANONYMOUS = User("anonymous", "", KNOWN_PERMISSIONS)


class UsersFileError(ValueError):
    pass


def load_users(path: str) -> tuple[User, ...]:
    """Reads a users file; every problem is reported with what to fix."""
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UsersFileError(f"cannot read users file {path}: {exc}") from exc
    entries = doc.get("users") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not entries:
        raise UsersFileError(f"{path}: expected a top-level 'users' list, e.g. users: [{{name: admin, password: admin, permissions: [TASK_MANAGER]}}]")
    users = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not isinstance(entry.get("password"), str):
            raise UsersFileError(f"{path}: users[{i}] needs a string 'name' and a string 'password'")
        perms = entry.get("permissions", [TASK_VIEWER])
        unknown = set(perms) - KNOWN_PERMISSIONS if isinstance(perms, list) else {perms}
        if unknown:
            raise UsersFileError(f"{path}: users[{i}] has unknown permissions {sorted(map(str, unknown))}; known: {sorted(KNOWN_PERMISSIONS)}")
        users.append(User(entry["name"], entry["password"], frozenset(perms)))
    return tuple(users)


class Authenticator:
    def __init__(self, users=DEFAULT_USERS, enabled: bool = True):
        self.enabled = enabled
        self._users = {u.name: u for u in users}
        self._accepted: dict[str, User] = {}  # Authorization header -> user, for headers already verified

    def authenticate(self, header: str | None) -> User:
        if not self.enabled:
            return ANONYMOUS
        if not header:
            raise unauthenticated()
        user = self._accepted.get(header)
        if user is not None:
            return user
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or not token:
            raise unauthenticated("unsupported authorization scheme; use HTTP Basic")
        try:
            name, sep, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise unauthenticated("malformed Basic credentials") from None
        if not sep:
            raise unauthenticated("malformed Basic credentials")
        user = self._users.get(name)
        expected = user.password if user else "\0invalid"
        if not hmac.compare_digest(expected.encode(), password.encode()) or user is None:
            raise unauthenticated()
        if len(self._accepted) >= _CACHE_LIMIT:
            self._accepted.clear()
        self._accepted[header] = user
        return user

    @staticmethod
    def authorize(user: User, permission: str | None) -> None:
        if not user.can(permission):
            raise forbidden()
