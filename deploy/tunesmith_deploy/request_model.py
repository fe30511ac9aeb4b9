"""API Gateway's request model for ``POST /generate``, derived from the one contract.

API Gateway validates bodies against JSON Schema draft 4; `GenerateRequest` describes itself in
draft 2020-12 (pydantic). `request_schema` translates that description, so the gateway's
first check and the function's full check (`parse_generate_request`) cannot drift apart. A
keyword the translation does not know stops synthesis rather than being dropped silently.
"""

from __future__ import annotations

from typing import Any, Final

from aws_cdk import aws_apigateway as apigw

from tunesmith.schema import request_json_schema

__all__ = ["request_schema"]

_TYPES: Final = {
    "object": apigw.JsonSchemaType.OBJECT,
    "string": apigw.JsonSchemaType.STRING,
    "number": apigw.JsonSchemaType.NUMBER,
    "integer": apigw.JsonSchemaType.INTEGER,
    "boolean": apigw.JsonSchemaType.BOOLEAN,
    "array": apigw.JsonSchemaType.ARRAY,
    "null": apigw.JsonSchemaType.NULL,
}
_SAME: Final = {
    "title": "title",
    "description": "description",
    "default": "default",
    "enum": "enum",
    "required": "required",
    "minimum": "minimum",
    "maximum": "maximum",
    "minLength": "min_length",
    "maxLength": "max_length",
    "pattern": "pattern",
    "minItems": "min_items",
    "maxItems": "max_items",
}
_DOCUMENTATION_ONLY: Final = frozenset({"examples"})


def request_schema(max_duration: float) -> apigw.JsonSchema:
    """The draft-4 schema of a `GenerateRequest`, with this deployment's duration limit."""
    schema = request_json_schema()
    schema["properties"]["duration"]["maximum"] = max_duration
    return _translate(schema, top=True)


def _translate(node: dict[str, Any], *, top: bool = False) -> apigw.JsonSchema:
    args: dict[str, Any] = {"schema": apigw.JsonSchemaVersion.DRAFT4} if top else {}
    for key, value in node.items():
        if key in _DOCUMENTATION_ONLY:
            continue
        if key in _SAME:
            args[_SAME[key]] = value
        elif key == "type":
            args["type"] = _TYPES[value]
        elif key == "properties":
            args["properties"] = {name: _translate(sub) for name, sub in value.items()}
        elif key == "additionalProperties":
            args["additional_properties"] = value if isinstance(value, bool) else _translate(value)
        elif key == "items":
            args["items"] = _translate(value)
        elif key == "anyOf":
            args["any_of"] = [_translate(sub) for sub in value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):  # a number since draft 6
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            args[bound] = value
            args[f"exclusive_{bound}"] = True
        else:
            raise ValueError(f"GenerateRequest's JSON schema uses {key!r}, not translated")
    return apigw.JsonSchema(**args)
