"""Loads openapi.yaml once, indexes its operations and compiles every validator up front.

Nothing here knows about HTTP framing: it turns raw parameter strings into typed values (or a list of
sub-errors), and answers "does this body match what the spec declares for that status".
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from .config import SPEC_PATH  # noqa: F401  (defined in config.py, which imports no app module; kept importable here)

try:  # the C loader is several times faster where libyaml is present
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover
    _Loader = yaml.SafeLoader

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
FORMAT_RANGES = {
    "int64": (-(2**63), 2**63 - 1),
    "int32": (-(2**31), 2**31 - 1),
}
_CHECKED_BY_PARSE = frozenset({"type", "format", "description", "example", "examples", "title"})
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_TEMPLATE = re.compile(r"\{([^}/]+)\}")


def _compile(schema: dict, components: dict) -> Draft202012Validator:
    """A validator whose `#/components/...` references resolve against the spec."""
    root = {**schema, "components": components}
    return Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)


@dataclass(frozen=True)
class SubError:
    object: str
    field: str
    rejected_value: Any
    message: str

    def as_dict(self) -> dict:
        return {
            "field": self.field,
            "message": self.message,
            "object": self.object,
            "rejectedValue": self.rejected_value,
        }


@dataclass
class Parameter:
    name: str
    location: str  # path, query, header
    required: bool
    schema: dict
    validator: Draft202012Validator

    def __post_init__(self) -> None:
        # A schema that says no more than its type and format is fully checked by parse() itself; running the
        # JSON-schema validator on every request would only repeat that (it costs ~10 µs a parameter).
        self.needs_validator = bool(set(self.schema) - _CHECKED_BY_PARSE)

    def describe_range(self) -> str:
        lo, hi = FORMAT_RANGES.get(self.schema.get("format", ""), (None, None))
        if "minimum" in self.schema:
            lo = self.schema["minimum"] if lo is None else max(lo, self.schema["minimum"])
        if "maximum" in self.schema:
            hi = self.schema["maximum"] if hi is None else min(hi, self.schema["maximum"])
        if lo is not None and hi is not None:
            return f"must be an integer between {lo} and {hi}"
        return "must be an integer"

    def parse(self, raw: str) -> Any:
        """Turns the raw string into a value of the declared type; raises ValueError with a message."""
        kind = self.schema.get("type")
        value: Any = raw
        if kind == "integer":
            if not _INTEGER.match(raw):
                raise ValueError(self.describe_range())
            value = int(raw)
            bounds = FORMAT_RANGES.get(self.schema.get("format", ""))
            if bounds and not bounds[0] <= value <= bounds[1]:
                raise ValueError(self.describe_range())
        elif kind == "number":
            try:
                value = float(raw)
            except ValueError:
                raise ValueError("must be a number") from None
        elif kind == "boolean":
            if raw.lower() not in ("true", "false"):
                raise ValueError("must be true or false")
            value = raw.lower() == "true"
        error = next(iter(self.validator.iter_errors(value)), None) if self.needs_validator else None
        if error is not None:
            raise ValueError(self.describe_range() if kind == "integer" else error.message)
        return value


@dataclass
class Operation:
    operation_id: str
    method: str  # upper case
    path: str  # as written in the spec
    flask_rule: str
    permission: str | None
    secured: bool
    parameters: list[Parameter]
    responses: dict[str, Draft202012Validator]  # status code (or "default") -> body validator

    def parse_parameters(self, path_values: dict, query, headers) -> tuple[dict, list[SubError]]:
        values: dict[str, Any] = {}
        errors: list[SubError] = []
        for param in self.parameters:
            source = path_values if param.location == "path" else query if param.location == "query" else headers
            raw = source.get(param.name)
            if raw is None:
                if param.required:
                    errors.append(SubError(self.operation_id, param.name, None, "is required"))
                elif "default" in param.schema:
                    values[param.name] = param.schema["default"]
                continue
            try:
                values[param.name] = param.parse(raw)
            except ValueError as exc:
                errors.append(SubError(self.operation_id, param.name, raw, str(exc)))
        return values, errors

    def response_validator(self, status: int) -> Draft202012Validator | None:
        return self.responses.get(str(status)) or self.responses.get(f"{str(status)[0]}XX") or self.responses.get("default")


@dataclass
class Spec:
    raw: dict
    path: Path
    operations: dict[str, Operation] = field(default_factory=dict)
    _validators: dict[str, Draft202012Validator] = field(default_factory=dict)

    @property
    def components(self) -> dict:
        return self.raw.get("components", {})

    def schema(self, name: str) -> dict:
        return self.components["schemas"][name]

    def enum(self, name: str) -> tuple[str, ...]:
        """The values of an enum schema under components/schemas, as the spec lists them."""
        return tuple(self.schema(name)["enum"])

    def validator(self, name: str) -> Draft202012Validator:
        """A compiled validator for components/schemas/NAME (compiled once, then reused)."""
        if name not in self._validators:
            self._validators[name] = _compile({"$ref": f"#/components/schemas/{name}"}, self.components)
        return self._validators[name]

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            node = self._pointer(node["$ref"])
        return node

    def _pointer(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are supported, got {ref!r}")
        node: Any = self.raw
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node


def to_flask_rule(path: str) -> str:
    return _TEMPLATE.sub(lambda m: f"<{m.group(1)}>", path)


def _index(spec: Spec) -> None:
    components = spec.components
    default_security = spec.raw.get("security", [])
    for path, item in spec.raw.get("paths", {}).items():
        item = spec.resolve(item)
        shared = item.get("parameters", [])
        for method in HTTP_METHODS:
            if method not in item:
                continue
            op = item[method]
            op_id = op.get("operationId")
            if not op_id:
                raise ValueError(f"{method.upper()} {path} has no operationId; the mock routes by operationId")
            merged: dict[tuple[str, str], dict] = {}
            for raw_param in [*shared, *op.get("parameters", [])]:
                param = spec.resolve(raw_param)
                merged[(param["name"], param["in"])] = param
            parameters = [
                Parameter(
                    name=p["name"],
                    location=p["in"],
                    required=bool(p.get("required", p["in"] == "path")),
                    schema=spec.resolve(p.get("schema", {})),
                    validator=_compile(p.get("schema", {}), components),
                )
                for p in merged.values()
                if p["in"] in ("path", "query", "header")
            ]
            responses = {}
            for status, response in op.get("responses", {}).items():
                response = spec.resolve(response)
                media = response.get("content", {}).get("application/json")
                if media and "schema" in media:
                    responses[str(status).upper()] = _compile(media["schema"], components)
            security = op.get("security", default_security)
            spec.operations[op_id] = Operation(
                operation_id=op_id,
                method=method.upper(),
                path=path,
                flask_rule=to_flask_rule(path),
                permission=op.get("x-ocp-permission"),
                secured=bool(security),
                parameters=parameters,
                responses=responses,
            )


@functools.lru_cache(maxsize=8)
def load_spec(path: str) -> Spec:
    """Parses and indexes the spec at PATH. Cached: a process reads each spec file once."""
    file = Path(path)
    try:
        raw = yaml.load(file.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"cannot read the OpenAPI spec at {file}: {exc}") from exc
    if not isinstance(raw, dict) or "paths" not in raw:
        raise ValueError(f"{file} is not an OpenAPI document (no 'paths')")
    spec = Spec(raw=raw, path=file)
    _index(spec)
    return spec


def first_error(validator: Draft202012Validator, instance: Any) -> str | None:
    """The most relevant validation error as one line, or None when the instance is valid."""
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(instance))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message}"
