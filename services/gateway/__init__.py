"""The HTTP gateway: authentication, scoping, validation, idempotency keys, and REST/ZAP
routes turned into bus requests. It holds no billing rules."""
