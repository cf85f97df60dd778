"""Settings read from the environment, once, at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    nats_url: str = ""
    database_url: str = ""
    data_dir: str = ".data"
    host: str = "127.0.0.1"
    port: int = 8080
    # gateway
    service_tokens: tuple[str, ...] = ()
    service_org: str = "hanzo"
    auto_provision_orgs: bool = True
    allow_query_keys: bool = True
    mint_policy: str = "secret_keys"  # or "platform_only"
    key_pepper: str = "billing-dev-pepper"
    cors_allowed_origins: tuple[str, ...] = ("*",)
    path_prefixes: tuple[str, ...] = ("/api/v1", "/v1/commerce", "/v1")
    request_timeout_s: float = 10.0
    require_idempotency_key: tuple[str, ...] = ()
    plans_dir: str = ""
    lapse_interval_s: float = 30.0  # how often expired deposits are swept
    # connections each service (and the gateway) may hold: a platform holds six pools, so
    # six times this must stay under the server's max_connections
    db_pool_size: int = 15
    # payments: the offline provider everywhere, live mode included (never in production)
    payments_offline: bool = False
    # how long an unfinished charge (a top-up, a confirm) is left to the request working on
    # it before the recovery jobs presume that worker gone and finish it themselves
    payments_recovery_s: float = 60.0
    # payments: the key provider credentials are encrypted with (runtime/encryption.py)
    secrets_key: str = field(default="", repr=False)
    # payments: where the providers' APIs are (tests point them at local servers); the
    # platform's, never an organization's
    stripe_api_base: str = ""
    square_base_url: str = ""
    # payments: the platform's webhook secrets, for organizations that stored none
    stripe_webhook_secret: str = field(default="", repr=False)
    square_webhook_signature_key: str = field(default="", repr=False)
    # gateway: where Square reaches the gateway (`https://billing.example.com`): Square signs
    # the notification URL with the body, and that URL is this origin + the path the request
    # came to (a proxy in front changes what the gateway sees); empty: the request's own URL
    square_webhook_url: str = ""
    # payments: outbound webhook POSTs in flight at once, per replica (one per endpoint)
    webhook_concurrency: int = 64
    # telemetry: "none", "console" or "otlp"
    otel_exporter: str = "none"
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        profile = env.get("BILLING_PROFILE", "compat")
        tokens = _csv(env.get("BILLING_SERVICE_TOKENS")) + _csv(env.get("COMMERCE_SERVICE_TOKEN"))
        return cls(
            nats_url=env.get("NATS_URL", ""),
            database_url=env.get("DATABASE_URL", ""),
            data_dir=env.get("BILLING_DATA_DIR", ".data"),
            host=env.get("BILLING_HOST", "127.0.0.1"),
            port=int(env.get("BILLING_PORT", "8080")),
            service_tokens=tokens,
            service_org=env.get("BILLING_SERVICE_ORG") or env.get("COMMERCE_SERVICE_ORG") or "hanzo",
            auto_provision_orgs=_bool(env.get("AUTO_PROVISION_ORGS"), True),
            allow_query_keys=_bool(env.get("ALLOW_QUERY_KEYS"), profile != "production"),
            mint_policy=env.get("MINT_POLICY", "secret_keys"),
            key_pepper=env.get("BILLING_KEY_PEPPER", "billing-dev-pepper"),
            cors_allowed_origins=_csv(env.get("CORS_ALLOWED_ORIGINS", "*")) or ("*",),
            path_prefixes=_csv(env.get("GATEWAY_PATH_PREFIXES")) or ("/api/v1", "/v1/commerce", "/v1"),
            request_timeout_s=float(env.get("BILLING_REQUEST_TIMEOUT", "10")),
            require_idempotency_key=_csv(env.get("REQUIRE_IDEMPOTENCY_KEY")),
            plans_dir=env.get("BILLING_PLANS_DIR", ""),
            lapse_interval_s=float(env.get("BILLING_LAPSE_INTERVAL", "30")),
            db_pool_size=int(env.get("BILLING_DB_POOL_SIZE", "15")),
            otel_exporter=env.get("BILLING_OTEL_EXPORTER", "none"),
            payments_offline=_bool(env.get("PAYMENTS_OFFLINE"), False),
            payments_recovery_s=float(env.get("PAYMENTS_RECOVERY_SECONDS", "60")),
            secrets_key=env.get("BILLING_SECRETS_KEY", ""),
            stripe_api_base=env.get("STRIPE_API_BASE", ""),
            square_base_url=env.get("SQUARE_BASE_URL", ""),
            stripe_webhook_secret=env.get("STRIPE_WEBHOOK_SECRET", ""),
            square_webhook_signature_key=env.get("SQUARE_WEBHOOK_SIGNATURE_KEY", ""),
            square_webhook_url=env.get("SQUARE_WEBHOOK_URL", ""),
            webhook_concurrency=int(env.get("WEBHOOK_CONCURRENCY", "64")),
            env=env,
        )
