"""The OpenAPI 3.1 document, generated from the route table and the contracts, and the
pages that serve it: `GET /openapi.json` and a Swagger UI page at `GET /docs` whose assets
come from an installed package (nothing is fetched from the internet at run time).

A route gives the path, method, access class, idempotency and success status; its endpoint
gives the params struct (the request body, or the query parameters when the route reads its
query) and the result type (the success body); every struct's JSON schema is msgspec's. Every non-2xx answer
is the error envelope, one shared component. Built once when the application is assembled.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from contracts.invoicing import InvoiceDocument
from contracts.webhooks_in import SIGNATURE_HEADERS
from services.gateway.routing import Route

OPENAPI = "3.1.0"
_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")


# ---- security ----------------------------------------------------------------------------

SECURITY_SCHEMES: dict[str, Any] = {
    "secretKey": {
        "type": "http", "scheme": "bearer", "bearerFormat": "sk_live_… / sk_test_…",
        "description": "A secret API key (role admin; may create money when MINT_POLICY="
                       "secret_keys). The key's mode (live/test) is the request's mode. Also "
                       "accepted bare in `Authorization` or as the Basic user name.",
    },
    "publishableKey": {
        "type": "http", "scheme": "bearer", "bearerFormat": "pk_live_… / pk_test_…",
        "description": "A publishable API key: public routes only.",
    },
    "iamToken": {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "An IAM (OIDC) access token, asymmetrically signed. Role user, admin "
                       "(isAdmin or roles admin/owner) or platform (an admin of a platform "
                       "organization). Live mode.",
    },
    "serviceToken": {
        "type": "http", "scheme": "bearer",
        "description": "A platform service token (BILLING_SERVICE_TOKENS), role platform. Sent "
                       "with `X-IAM-Org-Id` naming the organization; `X-Billing-Mode: test` "
                       "for test mode (live otherwise).",
    },
    "serviceOrg": {
        "type": "apiKey", "in": "header", "name": "X-IAM-Org-Id",
        "description": "The organization a service token acts for (`X-IAM-Org` is read too; "
                       "without either: BILLING_SERVICE_ORG).",
    },
}
_PORTAL_SESSION = {
    "type": "apiKey", "in": "cookie", "name": "billing_portal",
    "description": "A customer portal session, set by `GET /billing/portal?link=` (a portal "
                   "link from `POST /billing/portal/links`) or `POST /billing/portal/session` "
                   "(an IAM token); an hour long.",
}
_QUERY_KEY = {
    "type": "apiKey", "in": "query", "name": "key",
    "description": "An API key in the query string (`?key=` or `?token=`), as the reference "
                   "accepted; the compat profile only.",
}
_ACCESS = {
    "public": "any valid credential, publishable keys included",
    "user": "end users (IAM role user, for themselves only), admins and the platform",
    "admin": "secret keys, IAM admins and the platform",
    "mint": "callers allowed to create money: the platform, and secret keys when "
            "MINT_POLICY=secret_keys",
    "platform": "the platform only (service tokens, platform admins)",
    "webhook": "no credential: the payment provider's signature of the raw body",
    "portal": "a customer portal session (the signed cookie the page sets, from a portal "
              "link or an IAM sign-in): that customer's data only",
}
_SCHEMES_BY_ACCESS = {
    "public": ("secretKey", "publishableKey", "iamToken", "service"),
    "user": ("secretKey", "iamToken", "service"),
    "admin": ("secretKey", "iamToken", "service"),
    "mint": ("secretKey", "iamToken", "service"),
    "platform": ("iamToken", "service"),
    "webhook": (),
    "portal": ("portalSession",),
}


def _security(access: str, query_keys: bool) -> list[dict[str, list]]:
    alternatives = []
    for scheme in _SCHEMES_BY_ACCESS[access]:
        if scheme == "service":
            alternatives.append({"serviceToken": [], "serviceOrg": []})
        else:
            alternatives.append({scheme: []})
    if query_keys and alternatives and access != "portal":
        alternatives.append({"queryKey": []})
    return alternatives


# ---- errors ------------------------------------------------------------------------------

ERROR_SCHEMA = {
    "title": "Error",
    "description": "The error envelope every non-2xx answer carries.",
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["type", "message"],
        "properties": {
            "type": {"const": "api-error"},
            "message": {"type": "string"},
            "code": {"type": "string", "description": "the bus error code, e.g. "
                                                      "invalid_request, not_found"},
            "param": {"type": "string", "description": "the field at fault, when known"},
            "requestId": {"type": "string"},
        },
    }},
}
_ERRORS = {  # status → (component name, description)
    "400": ("BadRequest", "Invalid request: malformed body or parameters, a rule refused."),
    "401": ("Unauthenticated", "No credential, or one that is unknown, revoked or expired."),
    "403": ("Forbidden", "The credential may not use this route, or another user's account."),
    "404": ("NotFound", "No such record (or route)."),
    "413": ("PayloadTooLarge", "Body larger than the bus can carry."),
    "422": ("IdempotencyMismatch", "Idempotency-Key reused with different parameters."),
    "4XX": ("ClientError", "Any other refusal (402 insufficient balance, 409 conflict, 429 "
                           "limit exceeded, ...)."),
    "5XX": ("ServerError", "Unavailable (503), timed out (504) or failed (500)."),
}


def _error_refs(route: Route, has_body: bool, path_params: list[str]) -> dict[str, Any]:
    wanted = ["400", "401", "403"]
    if path_params:
        wanted.append("404")
    if has_body:
        wanted.append("413")
    if route.idempotent:
        wanted.append("422")
    wanted += ["4XX", "5XX"]
    return {s: {"$ref": f"#/components/responses/{_ERRORS[s][0]}"} for s in wanted}


# ---- the document ------------------------------------------------------------------------


def document(routes: tuple[Route, ...], prefixes: tuple[str, ...], *, zap: Route,
             zap_methods: tuple[str, ...], version: str, query_keys: bool) -> dict[str, Any]:
    """The OpenAPI document of `routes` (and ZAP), served under each of `prefixes`."""
    types: list[Any] = []
    for route in routes:
        types.append(route.endpoint.params)
        if route.endpoint.result is not None:
            types.append(route.endpoint.result)
    refs, schemas = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(map(id, types), refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = route.template
        paths.setdefault(path, {})[route.method.lower()] = _operation(
            route, schemas, schema_of, query_keys)
    paths[zap.path] = {"post": _zap_operation(zap, zap_methods, query_keys)}
    security_schemes = dict(SECURITY_SCHEMES, portalSession=_PORTAL_SESSION)
    if query_keys:
        security_schemes["queryKey"] = _QUERY_KEY
    schemas["Error"] = ERROR_SCHEMA
    return {
        "openapi": OPENAPI,
        "info": {"title": "billing", "version": version,
                 "description": "Usage-based billing: balances and a ledger, usage, credits, "
                                "meters. Amounts are integers in the currency's minor unit."},
        "servers": [{"url": p} for p in prefixes],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "responses": {name: {"description": text, "content": {
                "application/json": {"schema": {"$ref": _REF.format(name="Error")}}}}
                for name, text in _ERRORS.values()},
            "parameters": {"IdempotencyKey": {
                "name": "Idempotency-Key", "in": "header", "required": False,
                "description": "Makes a retry safe: the same key and body replay the first "
                               "answer (`Idempotent-Replayed: true`). `X-Idempotency-Key` is "
                               "a synonym.",
                "schema": {"type": "string", "pattern": "^[ -~]{1,255}$"}},
                "PreferAsync": {
                    "name": "Prefer", "in": "header", "required": False,
                    "description": "`respond-async`: answer 202 once the events are durably "
                                   "queued, and record them in the background.",
                    "schema": {"type": "string", "enum": ["respond-async"]}}},
            "securitySchemes": security_schemes,
        },
    }


def _operation(route: Route, schemas: dict[str, Any], schema_of: dict[int, Any],
               query_keys: bool) -> dict[str, Any]:
    params = route.endpoint.params
    path_params = [m.group(1) for m in _PATH_PARAM.finditer(route.path)]
    fields = schemas[params.__name__].get("properties", {})
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(fields, name)}
        for name in path_params]
    if route.source == "query":
        parameters += [{"name": name, "in": "query", "required": False, "schema": schema}
                       for name, schema in fields.items() if name not in path_params]
    if route.idempotent:
        parameters.append({"$ref": "#/components/parameters/IdempotencyKey"})
    if route.kind == "ingest":
        parameters.append({"$ref": "#/components/parameters/PreferAsync"})
    if route.kind == "webhook":
        parameters += [{"name": name, "in": "header", "required": False,
                        "schema": {"type": "string"}} for name in SIGNATURE_HEADERS[:2]]
    subject = route.endpoint.subject
    operation: dict[str, Any] = {
        "operationId": _operation_id(route),
        "tags": [subject.split(".")[1]] if subject.count(".") >= 2 else ["billing"],
        "summary": subject,
        "description": f"Access `{route.access}`: {_ACCESS[route.access]}."
                       + (" Honours `Idempotency-Key`." if route.idempotent else ""),
        "security": _security(route.access, query_keys),
    }
    if parameters:
        operation["parameters"] = parameters
    has_body = route.source in ("body", "optional")
    if has_body:
        operation["requestBody"] = {"required": route.source == "body", "content": {
            "application/json": {"schema": schema_of[id(params)]}}}
    elif route.source == "raw":
        operation["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"type": "object",
                       "description": "The provider's event, exactly as it signed it."}}}}
    operation["responses"] = {**_success(route, schema_of),
                              **_error_refs(route, has_body, path_params)}
    return operation


def _path_schema(fields: dict[str, Any], name: str) -> dict[str, Any]:
    """A path segment is never empty, so the field's default does not apply."""
    schema = {k: v for k, v in fields.get(name, {"type": "string"}).items() if k != "default"}
    return {**schema, "minLength": 1}


def _success(route: Route, schema_of: dict[int, Any]) -> dict[str, Any]:
    result = route.endpoint.result
    if route.kind == "page" and result is None:
        return {str(route.status): {"description": "The page.", "content": {
            "text/html": {"schema": {"type": "string"}}}}}
    if route.status == 204 or result is None:
        return {str(route.status): {"description": "Done; no body."}}
    if route.kind == "document" or result is InvoiceDocument:  # the file itself, not its
        # JSON envelope on the bus (the portal page's invoice PDFs too)
        return {str(route.status): {"description": "The file.", "content": {
            "application/pdf": {"schema": {"type": "string", "format": "binary"}}}}}
    content = {"application/json": {"schema": schema_of[id(result)]}}
    success = {str(route.status): {"description": "Success.", "content": content}}
    if route.kind == "ingest":
        success["202"] = {"description": "Accepted, to be recorded asynchronously "
                                         "(`Prefer: respond-async`).", "content": content}
    return success


def _operation_id(route: Route) -> str:
    return route.method.lower() + re.sub(r"[^A-Za-z0-9]+", "_", _PATH_PARAM.sub(
        r"by_\1", route.path)).rstrip("_")


def _zap_operation(zap: Route, methods: tuple[str, ...], query_keys: bool) -> dict[str, Any]:
    """ZAP: JSON-RPC-like calls onto the REST routes' endpoints. Its errors travel in its own
    envelope with HTTP 200, except an unreadable call (400) and auth failures."""
    call = {"type": "object", "required": ["method"], "properties": {
        "method": {"enum": sorted(methods)},
        "id": {"type": ["string", "integer"]},
        "params": {"type": "object", "description": "the method's REST params"}}}
    answer = {"type": "object", "required": ["id"], "properties": {
        "id": {"type": ["string", "integer"]},
        "result": {},
        "error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "integer"}, "message": {"type": "string"}}}}}
    return {
        "operationId": "post_billing_zap",
        "tags": ["zap"],
        "summary": "ZAP: call a billing method",
        "description": f"Access `{zap.access}` for the call, then the method's own access "
                       "class. Errors: `{id, error: {code, message}}` with JSON-RPC codes "
                       "(-32700 parse, -32600 no method, -32601 unknown method, -32602 bad "
                       "params, -32000 failure); HTTP 400 only for an unreadable call.",
        "security": _security(zap.access, query_keys),
        "requestBody": {"required": True, "content": {"application/json": {"schema": call}}},
        "responses": {
            "200": {"description": "The method's result, or its error in ZAP's envelope.",
                    "content": {"application/json": {"schema": answer}}},
            "400": {"description": "Unreadable call, in ZAP's envelope.",
                    "content": {"application/json": {"schema": answer}}},
            "401": {"$ref": "#/components/responses/Unauthenticated"},
            "403": {"$ref": "#/components/responses/Forbidden"},
            "413": {"$ref": "#/components/responses/PayloadTooLarge"},
            "4XX": {"$ref": "#/components/responses/ClientError"},
            "5XX": {"$ref": "#/components/responses/ServerError"},
        },
    }


# ---- serving -----------------------------------------------------------------------------

_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>billing API</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/docs.js"></script>
</body>
</html>
"""
_DOCS_JS = 'SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});\n'
# The Swagger UI files the page uses, from the installed `swagger-ui-bundle-v2` package.
_ASSETS = {"swagger-ui.css": "text/css", "swagger-ui-bundle.js": "text/javascript"}
_ASSET_CACHE = "public, max-age=86400"


def add_routes(router: web.UrlDispatcher, spec: dict[str, Any]) -> None:
    """`GET /openapi.json`, `GET /docs` and the page's assets; public, no credential."""
    body = msgspec.json.encode(spec)

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    async def docs_page(request: web.Request) -> web.Response:
        return web.Response(text=_DOCS_PAGE, content_type="text/html")

    async def docs_js(request: web.Request) -> web.Response:
        return web.Response(text=_DOCS_JS, content_type="text/javascript",
                            headers={"Cache-Control": _ASSET_CACHE})

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["asset"]
        if name not in _ASSETS:
            raise web.HTTPNotFound()
        return web.FileResponse(swagger_ui_path / name, headers={
            "Content-Type": _ASSETS[name], "Cache-Control": _ASSET_CACHE})

    router.add_get("/openapi.json", openapi_json)
    router.add_get("/docs", docs_page)
    router.add_get("/docs/docs.js", docs_js)
    router.add_get("/docs/{asset}", asset)
