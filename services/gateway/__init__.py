"""The HTTP gateway: authentication, scoping, validation, idempotency keys, and REST/ZAP
routes turned into bus requests. It holds no billing rules.

Files: `app.py` the aiohttp application and its edge (request ids, CORS, errors);
`routing.py` what a route is, `routes.py` and `*_routes.py` the route table; `pipeline.py`
the steps every request takes; `errors.py` the one table that turns failures into answers;
`ingest.py` asynchronous meter events (routes of kind `ingest`); `http.py` decoding and
responses; `auth.py`, `iam.py`, `store.py` callers, IAM tokens and API keys.
"""
