"""Authentication (HTTP Basic, and OCP's AK/SK signature) and OCP's permissions.

Users come from a YAML or JSON file (`users: [{name, password, permissions: [...], accessKeys: [{accessKeyId,
accessKeySecret}]}]`) or the defaults below. Each operation names the permission it needs in the spec
(`x-ocp-permission`). The Authorization header's scheme picks the checker from SCHEMES (one function per scheme);
the signing rules themselves live in signature.py.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml

from . import signature
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
    access_keys: tuple = ()  # ((accessKeyId, accessKeySecret), ...) for OCP's AK/SK signature

    def can(self, permission: str | None) -> bool:
        return permission is None or permission in self.permissions


DEFAULT_USERS = (
    User("admin", "admin", frozenset({TASK_MANAGER, TASK_VIEWER}), (("admin-ak", "admin-sk"),)),
    User("viewer", "viewer", frozenset({TASK_VIEWER}), (("viewer-ak", "viewer-sk"),)),
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
        users.append(User(entry["name"], entry["password"], frozenset(perms), _access_keys(path, i, entry)))
    seen: dict[str, str] = {}
    for user in users:
        for key_id, _secret in user.access_keys:
            if key_id in seen:
                raise UsersFileError(f"{path}: accessKeyId {key_id!r} is given to both {seen[key_id]!r} and {user.name!r}; each key belongs to one user")
            seen[key_id] = user.name
    return tuple(users)


def _access_keys(path: str, i: int, entry: dict) -> tuple:
    keys = entry.get("accessKeys", [])
    example = "accessKeys: [{accessKeyId: my-ak, accessKeySecret: my-sk}]"
    if not isinstance(keys, list):
        raise UsersFileError(f"{path}: users[{i}].accessKeys must be a list, e.g. {example}")
    pairs = []
    for j, key in enumerate(keys):
        if not (isinstance(key, dict) and isinstance(key.get("accessKeyId"), str) and key["accessKeyId"]
                and isinstance(key.get("accessKeySecret"), str) and key["accessKeySecret"]):
            raise UsersFileError(f"{path}: users[{i}].accessKeys[{j}] needs a non-empty string 'accessKeyId' and 'accessKeySecret', e.g. {example}")
        if any(c.isspace() or c == ":" for c in key["accessKeyId"]):
            raise UsersFileError(f"{path}: users[{i}].accessKeys[{j}].accessKeyId may not contain spaces or ':'")
        pairs.append((key["accessKeyId"], key["accessKeySecret"]))
    return tuple(pairs)


class Authenticator:
    def __init__(self, users=DEFAULT_USERS, enabled: bool = True,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.enabled = enabled
        self.clock = clock  # the server time a signature's Date is checked against
        self._users = {u.name: u for u in users}
        self._keys = {key_id: (u, secret) for u in users for key_id, secret in u.access_keys}
        self._accepted: dict[str, User] = {}  # Basic Authorization header -> user, for headers already verified

    def authenticate(self, header: str | None, request: "signature.SignedRequest | None" = None) -> User:
        """The user HEADER proves. REQUEST (the signed parts) is needed by the signature scheme only; without
        it, the current Flask request is used."""
        if not self.enabled:
            return ANONYMOUS
        if not header:
            raise unauthenticated()
        user = self._accepted.get(header)
        if user is not None:
            return user
        scheme, _, token = header.partition(" ")
        check = SCHEMES.get(scheme.lower())
        if check is None and scheme.upper().startswith(signature.SCHEME_PREFIX):
            check = Authenticator._signed  # so another algorithm is told which one OCP supports
        if check is None:
            raise unauthenticated("unsupported authorization scheme; use HTTP Basic")
        return check(self, header, token, request)

    def _basic(self, header: str, token: str, _request) -> User:
        if not token:
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

    def _signed(self, header: str, _token: str, request: "signature.SignedRequest | None") -> User:
        # Never cached: the signature covers the Date and the body, which the header alone does not show.
        try:
            key_id = signature.verify(header, request or _current_request(), self._secret, self.clock())
        except signature.SignatureError as exc:
            raise unauthenticated(str(exc)) from None
        return self._keys[key_id][0]

    def _secret(self, key_id: str) -> str | None:
        entry = self._keys.get(key_id)
        return entry[1] if entry else None

    @staticmethod
    def authorize(user: User, permission: str | None) -> None:
        if not user.can(permission):
            raise forbidden()


# Authorization scheme (lower case) -> checker. One entry per scheme the spec's securitySchemes declare.
SCHEMES: dict[str, Callable[[Authenticator, str, str, "signature.SignedRequest | None"], User]] = {
    "basic": Authenticator._basic,
    signature.SCHEME.lower(): Authenticator._signed,
}


def _current_request() -> "signature.SignedRequest":
    """The signed parts of the current Flask request (the path decoded, the body as received)."""
    from flask import request

    return signature.SignedRequest(
        method=request.method,
        path=request.path,
        query=signature.parse_query(request.query_string),
        headers=request.headers,
        body=request.get_data(cache=True),
    )
