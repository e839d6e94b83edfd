"""A NUL character in every string of every operation (issue 14): the walk is derived from the OpenAPI
document, so a field, parameter or operation added tomorrow is covered without touching this file.
Each request is otherwise well formed, sent as admin (who may call everything); each must be API.md's
400 naming where the NUL was, and change nothing (PostgreSQL used to answer 500)."""
from urllib.parse import quote

import pytest

from tests.api.test_errors import assert_error_body
from tests.api.test_fuzz import fingerprint, schema as fuzz_schema, world  # noqa: F401  (world: a fixture)

NUL = "x\x00y"
METHODS = ("get", "post", "put", "patch", "delete")
DOCUMENT = fuzz_schema.raw_schema


def node_ref(ref):
    return ref.lstrip("#/").split("/")


def deref(node):
    while isinstance(node, dict) and "$ref" in node:
        target = DOCUMENT
        for part in node_ref(node["$ref"]):
            target = target[part]
        node = target
    return node


def string_paths(schema, path=(), depth=0):
    """Every place a string goes in a body of this schema: ("items", 0, "sku"), ..."""
    schema = deref(schema)
    if depth > 8:
        return
    for combined in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(combined, []):
            yield from string_paths(part, path, depth + 1)
    kinds = schema.get("type")
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "string" in kinds:
        yield path
    if "object" in kinds or "properties" in schema:
        for name, prop in schema.get("properties", {}).items():
            if not deref(prop).get("readOnly"):
                yield from string_paths(prop, path + (name,), depth + 1)
    if "array" in kinds:
        yield from string_paths(schema.get("items", {}), path + (0,), depth + 1)


def placeholder(schema):
    """A plausible value for a field the target does not need: the request is otherwise well formed."""
    schema = deref(schema)
    if "example" in schema:
        return schema["example"]
    if schema.get("enum"):
        return next(value for value in schema["enum"] if value is not None)
    kind = schema.get("type")
    kind = next((k for k in kind if k != "null"), None) if isinstance(kind, list) else kind
    if kind == "integer":
        return max(1, schema.get("minimum", 1))
    if kind == "number":
        return max(1, schema.get("minimum", 1))
    if kind == "boolean":
        return False
    if kind == "array":
        return [placeholder(schema.get("items", {}))]
    if kind == "object" or "properties" in schema:
        return build(schema, ())
    return {"date": "2000-01-01", "date-time": "2030-01-01T00:00:00Z", "email": "li@example.com",
            "uri": "https://example.com/hook"}.get(schema.get("format"), "abcd1234")


def build(schema, path):
    """A body with the required fields, and a NUL at `path`."""
    schema = deref(schema)
    if not path:
        return NUL if "properties" not in schema else {
            name: placeholder(prop) for name, prop in schema["properties"].items()
            if name in schema.get("required", [])}
    head, rest = path[0], path[1:]
    if head == 0:
        return [build(schema.get("items", {}), rest)]
    for combined in ("allOf", "anyOf", "oneOf"):
        for part in schema.get(combined, []):
            if head in deref(part).get("properties", {}):
                return build(part, path)
    body = {name: placeholder(prop) for name, prop in schema.get("properties", {}).items()
            if name in schema.get("required", []) and name != head}
    body[head] = build(schema["properties"][head], rest)
    return body


def dotted(path):
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def operations():
    for route, item in DOCUMENT["paths"].items():
        for method in METHODS:
            if method in item:
                yield route, method, item.get("parameters", []) + item[method].get("parameters", []), item[method]


def cases(route, method, parameters, operation):
    """(description, path, query, headers, body, what the message names) for every string."""
    parameters = [deref(p) for p in parameters]
    values = {p["name"]: placeholder(p.get("schema", {})) for p in parameters if p["in"] == "path"}
    values = {name: 1 if isinstance(value, int) else value for name, value in values.items()}
    required_query = {p["name"]: placeholder(p.get("schema", {})) for p in parameters
                      if p["in"] == "query" and p.get("required")}
    body_schema = (operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema"))
    base_body = build(body_schema, ()) if body_schema else None

    def path_with(**override):
        text = route
        for name, value in {**values, **override}.items():
            text = text.replace("{%s}" % name, quote(str(value), safe=""))
        return text

    for p in parameters:
        if deref(p.get("schema", {})).get("type") != "string":
            continue
        if p["in"] == "path":
            yield (f"path {p['name']}", path_with(**{p["name"]: NUL}), required_query, {}, base_body,
                   "The address has a NUL character")
        elif p["in"] == "query":
            yield (f"query {p['name']}", path_with(), {**required_query, p["name"]: NUL}, {}, base_body,
                   "The query string has a NUL character")
        elif p["in"] == "header":
            yield (f"header {p['name']}", path_with(), required_query, {p["name"]: NUL}, base_body,
                   f"The {p['name']} header has a NUL character")
    if body_schema:
        for field in dict.fromkeys(string_paths(body_schema)):
            where = f"The body's field {dotted(field)!r}" if field else "The body"
            yield (f"body {dotted(field)}", path_with(), required_query, {}, build(body_schema, field),
                   f"{where} has a NUL character")


OPERATIONS = sorted(operations(), key=lambda op: (op[0], op[1]))


def test_the_walk_reaches_every_kind_of_string():
    """So the walk itself cannot silently find nothing."""
    found = {(method, route, description) for route, method, parameters, operation in OPERATIONS
             for description, *_ in cases(route, method, parameters, operation)}

    assert {("post", "/api/v1/members", "body name"), ("post", "/api/v1/members", "body external_ids[0].id"),
            ("post", "/api/v1/purchases", "body items[0].sku"), ("get", "/api/v1/members", "query email"),
            ("get", "/api/v1/audit-log", "query actor"), ("get", "/api/v1/vouchers/{code}", "path code"),
            ("post", "/api/v1/purchases", "header Idempotency-Key")} <= found
    assert len(found) > 100


@pytest.mark.parametrize("route, method, parameters, operation", OPERATIONS,
                         ids=[f"{method.upper()} {route}" for route, method, _, _ in OPERATIONS])
def test_a_nul_in_any_string_is_a_400_that_says_where_and_changes_nothing(app, api, world, route, method,
                                                                          parameters, operation):
    before = fingerprint(app)
    for description, path, query, headers, body, says in cases(route, method, parameters, operation):
        kwargs = {"query_string": query, "headers": {**api.headers["admin"], **headers}}
        if body is not None:
            kwargs["json"] = body
        response = getattr(api.client, method)(path, **kwargs)

        assert response.status_code == 400, (description, response.status_code, response.json)
        assert_error_body(response, 400, "bad_request")
        assert response.json["message"].startswith(says), (description, response.json)
    assert fingerprint(app) == before
