"""The contract as data: openapi.yaml loaded once, its operations indexed, its schemas compiled on demand.

Everything the checks need to know about the API (enum values, required fields, formats, declared statuses,
media types, parameter types) is read from here, never repeated in code.
"""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
INTEGER_FORMATS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_CANONICAL_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)\Z")
_LOOSE_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_TEMPLATE = re.compile(r"\{([^}/]+)\}")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when present: several times faster
# Where a JSON Schema (2020-12) holds subschemas: maps of them, lists of them, single ones. Everything else is data
# (enum, const, default, examples...) or an annotation, copied as it is.
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems"})
_SCHEMA_ONE = frozenset({"items", "additionalItems", "additionalProperties", "unevaluatedItems",
                         "unevaluatedProperties", "contains", "propertyNames", "not", "if", "then", "else"})  # fmt: skip
# Keywords that do not validate: a $ref beside only these means the referenced schema, nothing more.
_ANNOTATIONS = frozenset({"description", "title", "$comment", "example", "examples", "default", "deprecated",
                          "readOnly", "writeOnly", "externalDocs", "xml"})  # fmt: skip


class SpecError(Exception):
    """The spec cannot be used: missing, not YAML/JSON, or not an OpenAPI 3 document."""


@dataclass(frozen=True)
class Operation:
    operation_id: str | None
    method: str  # upper case
    path: str  # the template, as written in the spec
    parameters: tuple[dict, ...]  # resolved parameter objects
    responses: dict[str, dict]  # status key ("200", "4XX", "default") -> resolved response object
    has_body: bool

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    def response(self, status: int) -> dict | None:
        """The response object the spec declares for STATUS (exact code, then 4XX, then default)."""
        return self.responses.get(str(status)) or self.responses.get(f"{str(status)[0]}XX") or self.responses.get(
            "default"
        )

    def url(self, base_url: str, values: dict[str, Any]) -> str:
        return base_url.rstrip("/") + _TEMPLATE.sub(lambda m: str(values[m.group(1)]), self.path)


@dataclass
class Contract:
    raw: dict
    path: str = "<dict>"
    sha256: str = ""
    operations: list[Operation] = field(default_factory=list)
    _validators: dict[int, Draft202012Validator] = field(default_factory=dict, repr=False)
    _memo: dict[tuple, tuple[Any, Any]] = field(default_factory=dict, repr=False)

    # -- loading ---------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "Contract":
        file = Path(path)
        try:
            data = file.read_bytes()
            raw = yaml.load(data, Loader=_LOADER)
        except (OSError, yaml.YAMLError) as exc:
            raise SpecError(f"cannot read the OpenAPI spec at {file}: {exc}".splitlines()[0]) from None
        contract = cls.from_dict(raw, path=str(file))
        contract.sha256 = hashlib.sha256(data).hexdigest()
        return contract

    @classmethod
    def from_dict(cls, raw: Any, path: str = "<dict>") -> "Contract":
        if not isinstance(raw, dict) or not str(raw.get("openapi", "")).startswith("3") or "paths" not in raw:
            raise SpecError(f"{path} is not an OpenAPI 3 document (no 'openapi: 3.x' or no 'paths')")
        contract = cls(raw=raw, path=path)
        try:
            contract._index()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SpecError(f"{path}: cannot index its operations: {exc!r}") from None
        return contract

    def _index(self) -> None:
        for path, item in self.raw["paths"].items():
            item = self.resolve(item)
            shared = item.get("parameters", [])
            for method in HTTP_METHODS:
                if method not in item:
                    continue
                op = item[method]
                params = {}
                for p in [*shared, *op.get("parameters", [])]:
                    p = self.resolve(p)
                    params[(p["name"], p["in"])] = p
                self.operations.append(
                    Operation(
                        operation_id=op.get("operationId"),
                        method=method.upper(),
                        path=path,
                        parameters=tuple(params.values()),
                        responses={str(k).upper(): self.resolve(v) for k, v in op.get("responses", {}).items()},
                        has_body="requestBody" in op,
                    )
                )

    # -- lookups ---------------------------------------------------------------------------------
    def operation(self, operation_id: str | None) -> Operation | None:
        return next((op for op in self.operations if operation_id and op.operation_id == operation_id), None)

    def find(self, method: str, path_template: str) -> Operation | None:
        """The operation declared for METHOD on the spec path PATH_TEMPLATE, or None."""
        return next((op for op in self.operations if op.method == method.upper() and op.path == path_template), None)

    def resolve(self, node: Any) -> Any:
        while isinstance(node, dict) and "$ref" in node:
            node = self._pointer(node["$ref"])
        return node

    def _pointer(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise ValueError(f"only local references are supported, got {ref!r}")
        node = self.raw
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def schema(self, name: str) -> dict | None:
        return self.raw.get("components", {}).get("schemas", {}).get(name)

    @property
    def envelope_required(self) -> tuple[str, ...]:
        """The fields every response body carries: `required` of the spec's Envelope schema."""
        return tuple((self.schema("Envelope") or {}).get("required", ()))

    # -- schemas ---------------------------------------------------------------------------------
    def validator(self, schema: dict) -> Draft202012Validator:
        """A compiled validator for SCHEMA (a node of this spec); `#/components/...` refs resolve. The refs are
        replaced by what they point to once, here (see inline), so that validating a body looks none of them up."""
        key = id(schema)
        if key not in self._validators:
            inlined = self.inline(schema)
            root = {**(inlined if isinstance(inlined, dict) else schema), "components": self.raw.get("components", {})}
            self._validators[key] = Draft202012Validator(root, format_checker=Draft202012Validator.FORMAT_CHECKER)
        return self._validators[key]

    def inline(self, schema: Any, active: tuple[str, ...] = ()) -> Any:
        """SCHEMA with every local `$ref` that stands alone (beside annotations only) replaced by the schema it
        points to, recursively: the same constraints, validated the same way, with no reference to look up. A
        recursive reference (one met again inside what it points to) and a `$ref` beside other keywords stay as
        they are (the validator's root keeps `components`, so they still resolve). The spec itself is not changed:
        the nodes that change are copies."""
        if not isinstance(schema, dict):
            return schema
        ref = schema.get("$ref")
        standalone = isinstance(ref, str) and schema.keys() - {"$ref"} <= _ANNOTATIONS
        if standalone and ref.startswith("#/") and ref not in active:
            try:
                target = self._pointer(ref)
            except (KeyError, IndexError, TypeError):
                target = None  # a dangling reference: left for the validator to report as it always did
            if target is not None:
                return self.inline(target, (*active, ref))
        out = {}
        for key, value in schema.items():
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                value = {name: self.inline(sub, active) for name, sub in value.items()}
            elif key in _SCHEMA_LISTS and isinstance(value, list):
                value = [self.inline(sub, active) for sub in value]
            elif key in _SCHEMA_ONE:
                value = self.inline(value, active)
            out[key] = value
        return out

    def first_error(self, schema: dict, instance: Any) -> str | None:
        """The most relevant way INSTANCE breaks SCHEMA, as one line, or None when it matches."""
        error = best_match(self.validator(schema).iter_errors(instance))
        if error is None:
            return None
        where = "/" + "/".join(str(p) for p in error.absolute_path)
        return f"at {where}: {error.message}"

    def walk(self, schema: Any, instance: Any, where: str = "") -> Iterator[tuple[str, dict, Any]]:
        """Every (location, schema, value) pair of INSTANCE that SCHEMA describes through $ref, allOf,
        properties and items. oneOf/anyOf are not entered (which branch applies is schema validation's job)."""
        found: list[tuple[str, dict, Any]] = []
        self._walk(schema, instance, where, found)
        return iter(found)

    def _walk(self, schema: Any, instance: Any, where: str, found: list) -> None:
        # depth first, a node before what is inside it, into one list (nested generators cost more than the walk)
        schema = self.resolve(schema)
        if not isinstance(schema, dict):
            return
        found.append((where or "/", schema, instance))
        for sub in schema.get("allOf", ()):
            self._walk(sub, instance, where, found)
        if isinstance(instance, dict):
            for key, sub in schema.get("properties", {}).items():
                if key in instance:
                    self._walk(sub, instance[key], f"{where}/{key}", found)
        if isinstance(instance, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(instance):
                self._walk(schema["items"], item, f"{where}/{index}", found)

    def required(self, schema: Any) -> set[str]:
        """The property names SCHEMA requires, through $ref and allOf."""
        schema = self.resolve(schema)
        names = set(schema.get("required", [])) if isinstance(schema, dict) else set()
        for sub in schema.get("allOf", []) if isinstance(schema, dict) else []:
            names |= self.required(sub)
        return names

    def _cached(self, kind: str, schema: Any, name: str | None, compute: Callable[[], Any]) -> Any:
        """COMPUTE's answer about SCHEMA, a node of the spec (which does not change), worked out once per node:
        the checks ask the same of every response. The entry holds SCHEMA, so its id stays that node's."""
        if not isinstance(schema, dict) or not schema:
            return compute()
        key = (kind, id(schema), name)
        entry = self._memo.get(key)
        if entry is None or entry[0] is not schema:
            entry = self._memo[key] = (schema, compute())
        return entry[1]

    def property_schema(self, schema: Any, name: str) -> dict | None:
        """The (resolved) schema SCHEMA gives its property NAME, through $ref and allOf; None when it has none."""
        return self._cached("property", schema, name, lambda: self._property_schema(schema, name))

    def _property_schema(self, schema: Any, name: str) -> dict | None:
        schema = self.resolve(schema)
        if not isinstance(schema, dict):
            return None
        found = schema.get("properties", {}).get(name)
        if found is not None:
            return self.resolve(found)
        for sub in schema.get("allOf", []):
            found = self.property_schema(sub, name)
            if found is not None:
                return found
        return None

    def properties(self, schema: Any) -> dict[str, dict]:
        """Every property SCHEMA declares (name -> resolved schema), through $ref and allOf. Shared between
        callers: read it, do not change it."""
        return self._cached("properties", schema, None, lambda: self._properties(schema))

    def _properties(self, schema: Any) -> dict[str, dict]:
        schema = self.resolve(schema)
        found: dict[str, dict] = {}
        if isinstance(schema, dict):
            for sub in schema.get("allOf", []):
                found.update(self.properties(sub))
            found.update({k: self.resolve(v) for k, v in schema.get("properties", {}).items()})
        return found

    def data_schema(self, operation: Operation, status: int = 200) -> dict | None:
        """The schema of `data` in OPERATION's STATUS answer (OCP's envelope), or None."""
        return self.property_schema(self.body_schema(operation, status, None) or {}, "data")

    def items_schema(self, schema: Any, name: str) -> dict | None:
        """The items schema of SCHEMA's array property NAME, or None."""
        array = self.property_schema(schema, name)
        items = array.get("items") if isinstance(array, dict) else None
        return self.resolve(items) if isinstance(items, dict) else None

    def body_schema(self, operation: Operation, status: int, media_type: str | None) -> dict | None:
        """The schema the spec declares for this response's body (the JSON one when the media type is
        not declared), or None."""
        response = operation.response(status)
        content = (response or {}).get("content") or {}
        media = content.get(media_type or "") or next(
            (m for t, m in content.items() if t.split(";")[0].strip().endswith("json")), None
        )
        return (media or {}).get("schema")

    # -- requests --------------------------------------------------------------------------------
    def parameters_valid(self, operation: Operation, path_values: dict[str, str]) -> bool | None:
        """Whether the path parameter texts are schema-valid: True, False, or None when it cannot be told
        (a non-canonical integer such as "+5", or an operation with query/header parameters or a body)."""
        if operation.has_body or any(p["in"] != "path" for p in operation.parameters if p.get("required")):
            return None
        verdict: bool | None = True
        for param in operation.parameters:
            if param["in"] != "path":
                continue
            text = path_values.get(param["name"])
            one = False if text is None else self._parameter_valid(self.resolve(param.get("schema", {})), text)
            if one is False:
                return False
            if one is None:
                verdict = None
        return verdict

    def query_values(self, operation: Operation, url: str) -> dict[str, Any] | None:
        """OPERATION's query parameters as URL sends them, typed, with the spec's defaults for those left out (a
        parameter without a default and not sent is absent). None when one is repeated or not schema-valid (what
        the server should do then is for negative_data_rejection to judge)."""
        sent: dict[str, list[str]] = {}
        for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
            sent.setdefault(name, []).append(value)
        values: dict[str, Any] = {}
        for param in operation.parameters:
            if param.get("in") != "query":
                continue
            name, schema = param["name"], self.resolve(param.get("schema", {}))
            texts = sent.get(name)
            if texts is None:
                if "default" in schema:
                    values[name] = schema["default"]
                continue
            if len(texts) != 1 or not self._parameter_valid(schema, texts[0]):
                return None
            values[name] = int(texts[0]) if schema.get("type") == "integer" else texts[0]
        return values

    def _parameter_valid(self, schema: dict, text: str) -> bool | None:
        if schema.get("type") == "integer":
            if not _CANONICAL_INTEGER.match(text):
                return None if _LOOSE_INTEGER.match(text) else False
            value: Any = int(text)
            low, high = INTEGER_FORMATS.get(schema.get("format", ""), (None, None))
            if low is not None and not low <= value <= high:
                return False
        elif schema.get("type") in (None, "string"):
            value = text
        else:
            return None
        return self.first_error(schema, value) is None

    def without_parameter_examples(self) -> dict:
        """A copy of the spec whose path parameters carry no `example`/`examples`, so that generated requests
        never reuse them (the spec's examples are the fixture ids)."""
        raw = copy.deepcopy(self.raw)
        clone = Contract(raw=raw)
        params = list(raw.get("components", {}).get("parameters", {}).values())
        for item in raw["paths"].values():
            item = clone.resolve(item)
            params += item.get("parameters", [])
            params += [p for m in HTTP_METHODS if m in item for p in item[m].get("parameters", [])]
        for param in params:
            if isinstance(param, dict) and param.get("in") == "path":
                param.pop("example", None)
                param.pop("examples", None)
                if isinstance(param.get("schema"), dict):
                    param["schema"].pop("example", None)
                    param["schema"].pop("examples", None)
        return raw
