"""The OpenAPI document: generated from the route table and the contracts, valid OpenAPI 3.1,
served without a credential, with a docs page whose assets come from an installed package."""

from __future__ import annotations

import jsonschema
from openapi_spec_validator import validate

from contracts.invoicing import InvoiceDocument
from services.gateway.routes import ROUTES, ZAP_METHODS, ZAP_ROUTE


async def _document(http) -> dict:
    async with http.get("/openapi.json") as r:  # no credential
        assert r.status == 200 and r.content_type == "application/json"
        return await r.json()


async def test_the_document_is_valid_openapi_3_1(http, settings):
    doc = await _document(http)
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert doc["openapi"].startswith("3.1")
    assert [s["url"] for s in doc["servers"]] == list(settings.path_prefixes)
    assert doc["servers"][0]["url"] == "/api/v1"


async def test_every_route_with_its_parameters_bodies_and_responses(http):
    doc = await _document(http)
    schemas = doc["components"]["schemas"]
    operation_ids = set()
    for route in ROUTES:
        op = doc["paths"][route.template][route.method.lower()]
        operation_ids.add(op["operationId"])
        params = route.endpoint.params.__name__
        fields = set(schemas[params].get("properties", {}))
        declared = {(p["in"], p["name"]) for p in op.get("parameters", []) if "in" in p}
        path_params = {name for where, name in declared if where == "path"}
        assert path_params == {seg[1:-1] for seg in route.template.split("/") if seg[:1] == "{"}
        if route.source == "query":
            assert "requestBody" not in op
            assert {name for where, name in declared if where == "query"} == fields - path_params
        elif route.source == "raw":  # a provider's event, not our params
            body = op["requestBody"]["content"]["application/json"]["schema"]
            assert body["type"] == "object"
        else:
            body = op["requestBody"]["content"]["application/json"]["schema"]
            assert body == {"$ref": f"#/components/schemas/{params}"}
        if route.idempotent:
            assert {"$ref": "#/components/parameters/IdempotencyKey"} in op["parameters"]
        assert str(route.status) in op["responses"], route.name
        if route.kind == "document" or route.endpoint.result is InvoiceDocument:  # a file
            assert op["responses"][str(route.status)]["content"]["application/pdf"][
                "schema"] == {"type": "string", "format": "binary"}
        elif route.endpoint.result is not None and route.status != 204:
            success = op["responses"][str(route.status)]["content"]["application/json"]
            assert success["schema"]["$ref"] if "$ref" in success["schema"] else success[
                "schema"]["items"]
        if route.kind == "ingest":
            assert "202" in op["responses"]
            assert {"$ref": "#/components/parameters/PreferAsync"} in op["parameters"]
        for status, response in op["responses"].items():
            if not status.startswith("2"):
                ref = response["$ref"]
                content = doc["components"]["responses"][ref.rsplit("/", 1)[1]]["content"]
                assert content["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"}
        # Webhooks carry no credential: the provider's signature is checked by payments.
        assert op["security"] or route.access == "webhook"
        assert op["description"].startswith(f"Access `{route.access}`")
    assert len(operation_ids) == len(ROUTES)  # unique
    zap = doc["paths"][ZAP_ROUTE.path]["post"]
    assert zap["requestBody"]["content"]["application/json"]["schema"]["properties"][
        "method"]["enum"] == sorted(ZAP_METHODS)


async def test_auth_schemes(http):
    doc = await _document(http)
    schemes = doc["components"]["securitySchemes"]
    assert {"secretKey", "publishableKey", "iamToken", "serviceToken", "serviceOrg"} <= set(
        schemes)
    assert schemes["serviceOrg"] == {**schemes["serviceOrg"], "in": "header",
                                     "name": "X-IAM-Org-Id"}
    plans = doc["paths"]["/dns/plans"]["get"]["security"]
    assert {"publishableKey": []} in plans  # public routes take publishable keys
    deposit = doc["paths"]["/billing/deposit"]["post"]["security"]
    assert {"publishableKey": []} not in deposit
    assert {"serviceToken": [], "serviceOrg": []} in deposit


async def test_real_errors_match_the_documented_envelope(http, org):
    doc = await _document(http)
    envelope = doc["components"]["schemas"]["Error"]
    for method, path, headers in (
            ("GET", "/api/v1/billing/balance", {}),  # 401
            ("GET", "/api/v1/billing/balance", org.auth("pk_test")),  # 403
            ("POST", "/api/v1/billing/deposit", org.auth()),  # 400: no body
            ("GET", "/api/v1/billing/nowhere", org.auth())):  # 404
        async with http.request(method, path, headers=headers) as r:
            assert r.status >= 400
            jsonschema.validate(await r.json(), envelope)


async def test_the_docs_page_and_its_assets_are_served_locally(http):
    async with http.get("/docs") as r:
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
    assert "http://" not in page and "https://" not in page  # nothing from the internet
    for asset, kind in (("/docs/swagger-ui.css", "text/css"),
                        ("/docs/swagger-ui-bundle.js", "text/javascript"),
                        ("/docs/docs.js", "text/javascript")):
        assert asset in page
        async with http.get(asset) as r:
            assert r.status == 200 and r.content_type == kind, asset
            body = await r.read()
        assert body
    async with http.get("/docs/docs.js") as r:
        assert "/openapi.json" in await r.text()
    async with http.get("/docs/index.html") as r:  # only the files the page uses
        assert r.status == 404
        assert (await r.json())["error"]["message"] == "not found"
