"""OCP's AK/SK request signature (`Authorization: OCP-ACCESS-KEY-HMACSHA1 {AK}:{Signature}`), as pure functions.

The string to sign has seven lines (OCP's v2 API docs, "Generate a signature"):

    HttpMethod \\n Md5Payload \\n ContentType \\n RequestDate \\n Host \\n OCP-Headers \\n PathAndQueryParams

and the signature is base64(HMAC-SHA1(AccessKeySecret, string to sign)). The `Date` header (RFC 1123) must be
within 15 minutes of the server's clock. Where OCP's docs are silent, each part follows OceanBase's own client
(see docs/contract-notes.md for the sources and the choices):

- Md5Payload: the MD5 of the raw body in upper-case hex; the empty string when there is no body.
- ContentType: the Content-Type header as sent, or the empty string.
- RequestDate: the Date header as sent.
- Host: the Host header as sent (host, plus `:port` when the port is not the scheme's default).
- OCP-Headers: every header whose name starts with `x-ocp-`, as `name:value` with the name in lower case and
  the value trimmed, sorted by name and joined with `\\n`; the empty string when there are none.
- PathAndQueryParams: the (decoded) path, then, when there is a query, `?` and its parameters sorted by name (a repeated
  name keeps its values in request order), each name and value percent-encoded (RFC 3986 unreserved characters
  stay as they are), joined with `&`.

Nothing here knows about Flask: `verify` takes the request's parts and raises SignatureError with a sentence that
says which part was wrong. `signed_headers` is the client side, for tests and SDK authors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import parse_qsl, quote, unquote, urlsplit

SCHEME_PREFIX = "OCP-ACCESS-KEY-"
ALGORITHM = "HMACSHA1"
SCHEME = SCHEME_PREFIX + ALGORITHM
MAX_SKEW = timedelta(minutes=15)
OCP_HEADER_PREFIX = "x-ocp-"
DATE_EXAMPLE = "Tue, 17 Jan 2023 03:36:01 GMT"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class SignatureError(ValueError):
    """A signed request the server refuses; the message says which part was wrong (it becomes debugMessage)."""


@dataclass(frozen=True)
class SignedRequest:
    """The parts of an HTTP request that the signature covers."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)  # any case; looked up case-insensitively
    body: bytes = b""

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


def parse_query(raw: str | bytes) -> tuple[tuple[str, str], ...]:
    """The decoded (name, value) pairs of a raw query string, blanks kept, in request order."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    return tuple(parse_qsl(raw, keep_blank_values=True))


# --------------------------------------------------------------------------------------- the seven parts

def md5_payload(body: bytes | None) -> str:
    return hashlib.md5(body).hexdigest().upper() if body else ""


def ocp_headers(headers: Mapping[str, str]) -> str:
    pairs = sorted(
        (name.lower(), value.strip()) for name, value in headers.items() if name.lower().startswith(OCP_HEADER_PREFIX)
    )
    return "\n".join(f"{name}:{value}" for name, value in pairs)


def path_and_query(path: str, query: Iterable[tuple[str, str]] = ()) -> str:
    ordered = sorted(query, key=lambda pair: pair[0])  # stable: a repeated name keeps its values' order
    if not ordered:
        return path
    return path + "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in ordered)


def string_to_sign(request: SignedRequest) -> str:
    return "\n".join((
        request.method.upper(),
        md5_payload(request.body),
        request.header("Content-Type") or "",
        request.header("Date") or "",
        request.header("Host") or "",
        ocp_headers(request.headers),
        path_and_query(request.path, request.query),
    ))


def sign(secret: str, text: str) -> str:
    """base64(HMAC-SHA1(secret, text)), both UTF-8."""
    digest = hmac.new(secret.encode("utf-8"), text.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


# ------------------------------------------------------------------------------------------ the server side

def parse_authorization(header: str) -> tuple[str, str]:
    """(access key id, signature) from `OCP-ACCESS-KEY-HMACSHA1 {AK}:{Signature}`."""
    scheme, _, credentials = header.strip().partition(" ")
    if scheme.upper() != SCHEME:
        algorithm = scheme[len(SCHEME_PREFIX):] if scheme.upper().startswith(SCHEME_PREFIX) else scheme
        raise SignatureError(f"unsupported signature algorithm {algorithm!r}; OCP supports only {ALGORITHM}")
    if scheme != SCHEME:
        raise SignatureError(f"the scheme must be written in upper case: {SCHEME}")
    access_key, sep, signature = credentials.strip().partition(":")
    if not sep or not access_key or not signature or " " in access_key:
        raise SignatureError(f"malformed credentials; expected '{SCHEME} {{AccessKeyId}}:{{Signature}}'")
    return access_key, signature


def parse_date(value: str | None, now: datetime) -> datetime:
    """The request's Date, checked: present, RFC 1123 (GMT) and within MAX_SKEW of NOW."""
    if not value:
        raise SignatureError(f"missing Date header; send the request time in RFC 1123 format, e.g. '{DATE_EXAMPLE}'")
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        when = None
    if when is None or when.tzinfo is None or not value.rstrip().endswith("GMT"):
        raise SignatureError(f"invalid Date header {value!r}; expected RFC 1123 in GMT, e.g. '{DATE_EXAMPLE}'")
    skew = when - now
    if abs(skew) >= MAX_SKEW:
        direction = "ahead of" if skew > timedelta(0) else "behind"
        raise SignatureError(
            f"Date {value!r} is {abs(skew).total_seconds():.0f} s {direction} the server's clock "
            f"({format_date(now)}); it must be within {int(MAX_SKEW.total_seconds() // 60)} minutes"
        )
    return when


def verify(authorization: str, request: SignedRequest, secret_for: Callable[[str], str | None],
           now: datetime | None = None) -> str:
    """Checks a signed request; returns its access key id or raises SignatureError saying what was wrong.

    The checks run in this order: the header's form, the access key, the Date, the signature.
    """
    access_key, signature = parse_authorization(authorization)
    secret = secret_for(access_key)
    if secret is None:
        raise SignatureError(f"unknown access key {access_key!r}")
    parse_date(request.header("Date"), now or datetime.now(timezone.utc))
    text = string_to_sign(request)
    if not hmac.compare_digest(sign(secret, text).encode(), signature.encode()):
        raise SignatureError(
            "signature mismatch; the server signed this string (JSON-escaped, lines joined by \\n): "
            + json.dumps(text, ensure_ascii=False)
        )
    return access_key


# ------------------------------------------------------------------------------------------ the client side

def format_date(when: datetime) -> str:
    """RFC 1123 in GMT, as the Date header wants it."""
    return format_datetime(when.astimezone(timezone.utc), usegmt=True)


def host_of(url: str) -> str:
    """The Host header an HTTP client sends for URL (the port only when it is not the scheme's default)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host += f":{parts.port}"
    return host


def signed_headers(method: str, url: str, body: bytes | str | None, access_key_id: str, access_key_secret: str,
                   now: datetime | None = None, *, content_type: str | None = None,
                   headers: Mapping[str, str] | None = None) -> dict[str, str]:
    """The headers to add to a request so that OCP (and the mock) accept its signature.

    >>> signed_headers("POST", "http://127.0.0.1:8080/api/v2/tasks/instances/1000/subtasks/10001/retry",
    ...                None, "admin-ak", "admin-sk")                                     # doctest: +SKIP
    {'Date': 'Tue, 17 Jan 2023 03:36:01 GMT', 'Authorization': 'OCP-ACCESS-KEY-HMACSHA1 admin-ak:…'}

    HEADERS are the other headers the request will carry (its `x-ocp-*` ones are signed); CONTENT_TYPE is
    returned as Content-Type when given. Send the body as the same bytes that were signed.
    """
    if isinstance(body, str):
        body = body.encode("utf-8")
    parts = urlsplit(url)
    out: dict[str, str] = {}
    if content_type:
        out["Content-Type"] = content_type
    out["Date"] = format_date(now or datetime.now(timezone.utc))
    all_headers = {name.lower(): value for name, value in {**(headers or {}), **out}.items()}
    all_headers["host"] = host_of(url)
    request = SignedRequest(method=method, path=unquote(parts.path) or "/", query=parse_query(parts.query),
                            headers=all_headers, body=body or b"")
    out["Authorization"] = f"{SCHEME} {access_key_id}:{sign(access_key_secret, string_to_sign(request))}"
    return out
