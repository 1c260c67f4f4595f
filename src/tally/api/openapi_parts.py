"""Building blocks of the OpenAPI document: references, envelopes,
parameters and operations."""

from __future__ import annotations

from typing import Any

STRING: dict[str, Any] = {"type": "string"}
BOOLEAN: dict[str, Any] = {"type": "boolean"}
STRINGS: dict[str, Any] = {"type": "array", "items": STRING}
STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": STRING}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def list_of(name: str) -> dict[str, Any]:
    return {"type": "array", "items": ref(name)}


def envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["data", "params"],
        "properties": {"data": data, "params": {"type": "object"}},
    }


def json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def query(name: str, schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": required, "schema": schema}
    if schema.get("type") == "array":
        param["explode"] = True  # a=1&a=2 (also accepted: a[]=1)
    return param


def map_param(name: str, *, required: bool = False) -> dict[str, Any]:
    """A string→string map parameter: ``keys[id]=acme`` (or JSON text
    ``keys={"id":"acme"}``)."""
    return {
        "name": name,
        "in": "query",
        "required": required,
        "style": "deepObject",
        "explode": True,
        "schema": STRING_MAP,
    }


def path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": STRING}


PAGE = [
    query("limit", {"type": "integer", "minimum": 0, "maximum": 250}),
    query("offset", {"type": "integer", "minimum": 0, "maximum": 2**31}),
]


def op(
    operation_id: str,
    ok: tuple[int, dict[str, Any], str],
    errors: tuple[int, ...],
    *,
    params: list[dict[str, Any]] | None = None,
    body: tuple[dict[str, Any], str] | None = None,
    public: bool = False,
) -> dict[str, Any]:
    status, schema, description = ok
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "responses": {
            str(status): json_body(schema, description),
            **{str(code): json_body(ref("ErrorBody"), "error") for code in errors},
        },
    }
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {"required": True, **json_body(*body)}
    if public:
        operation["security"] = []
    return operation


READ = (400, 401, 403)
READ_ONE = (400, 401, 403, 404)
WRITE = (400, 401, 403, 404, 413)
