"""Building blocks of the OpenAPI document: references, envelopes,
parameters, operations, and the refinements of body schemas.

Each resource declares its operations (one per route, in its ``openapi``
module, named in its route table: ``tally.api.common.routing``), the
structs its schemas come from (``SCHEMAS``) and what the server accepts of
its bodies (``RULES``); ``tally.api.openapi`` builds the document from them.

The msgspec structs that read request bodies are permissive on purpose
(``null`` equals absent, unknown fields are ignored, values are checked by
the rules with a sentence each), so the schemas generated from them say
little. ``RULES`` add what a client needs to send a request that is
accepted: required fields, enumerations, lengths. They describe the rules;
they do not enforce them (the routes do)."""

from __future__ import annotations

from typing import Any

from tally.api.common.paging import MAX_LIMIT, MAX_OFFSET

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
    query("limit", {"type": "integer", "minimum": 0, "maximum": MAX_LIMIT}),
    query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}),
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


Ops = dict[str, dict[str, Any]]  # a resource's operations, by name

READ = (400, 401, 403)
READ_ONE = (400, 401, 403, 404)
WRITE = (400, 401, 403, 404, 413)


def crud(name: str, body: str, detail: str, list_params: list[dict[str, Any]], title: str) -> Ops:
    """The operations of ``/things`` (create, list) and ``/things/{thing_id}``
    (get, update, delete)."""
    one = [path_param(f"{name}_id")]
    return {
        "create": op(
            f"create{title}", (201, envelope(ref(detail)), "created"), WRITE, body=(ref(body), name)
        ),
        "list": op(
            f"list{title}s",
            (200, envelope(list_of(detail)), "newest first"),
            READ,
            params=list_params,
        ),
        "get": op(f"get{title}", (200, envelope(ref(detail)), "found"), READ_ONE, params=one),
        "update": op(
            f"update{title}",
            (200, envelope(ref(detail)), "updated"),
            WRITE,
            params=one,
            body=(ref(body), name),
        ),
        "delete": op(
            f"delete{title}",
            (200, envelope(ref("DeleteResponse")), "deleted"),
            READ_ONE,
            params=one,
        ),
    }


# -- refinements of body schemas ------------------------------------------------
Rules = dict[str, tuple[list[str], dict[str, Any]]]  # component -> (required, properties)

TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 255}
KEYS: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 50,
    "propertyNames": {"minLength": 1, "maxLength": 255},
    "additionalProperties": TEXT,
}


def enum(values: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "string", "enum": list(values)}


def optional(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def refine(components: dict[str, Any], rules: Rules) -> dict[str, Any]:
    """``components`` with ``rules`` applied (in place, and returned)."""
    for name, (required, properties) in rules.items():
        schema = components[name]
        schema["required"] = required
        schema["properties"].update(properties)
    return components
