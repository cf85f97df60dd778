"""The `billing` command: dev, serve, migrate, keys, ledger and metering maintenance, and
gift subscriptions (`grant`)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import os
import sys
from pathlib import Path

from services.runtime.config import Settings

log = logging.getLogger("billing")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="billing", description="Usage-based billing platform")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="everything in one process, embedded servers if needed")
    dev.add_argument("--port", type=int, default=None)

    serve = commands.add_parser("serve", help="one service (or the gateway) in this process")
    serve.add_argument("service", help=" | ".join([*_service_names(), "gateway"]))

    commands.add_parser("migrate", help="apply every service's database migrations")

    keys = commands.add_parser("keys", help="API keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = key_commands.add_parser("create", help="create a key and print it (shown once)")
    create.add_argument("--org", required=True)
    create.add_argument("--mode", choices=("test", "live"), required=True)
    create.add_argument("--publishable", action="store_true")
    create.add_argument("--name", default="")
    revoke = key_commands.add_parser("revoke", help="revoke a key by id")
    revoke.add_argument("--id", required=True)

    ledger = commands.add_parser("ledger", help="ledger maintenance")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True)
    ledger_commands.add_parser("verify", help="recompute every balance and expiring lot "
                                              "from the ledger entries; exit 1 on any "
                                              "mismatch")

    metering = commands.add_parser("metering", help="metering maintenance")
    metering_commands = metering.add_subparsers(dest="metering_command", required=True)
    dead = metering_commands.add_parser(
        "dead-letters", help="meter-event batches that could not be stored: list them, "
                             "replay them to the workers, or discard them")
    dead.add_argument("action", choices=("list", "replay", "discard"))
    dead.add_argument("--seq", type=int, action="append", default=[],
                      help="a dead letter's sequence number (repeatable)")
    dead.add_argument("--all", action="store_true", help="every dead letter")

    grant = commands.add_parser("grant", help="give a user a catalog plan for a number of "
                                              "days (a gift subscription; a second grant "
                                              "of the plan extends the first)")
    grant.add_argument("user", help="the customer, owner/name")
    grant.add_argument("plan", help="a catalog plan's slug, e.g. world-pro")
    grant.add_argument("--days", type=int, default=0, help="how long (default 360)")
    grant.add_argument("--reason", default="")
    grant.add_argument("--by", default="", help="who gives it (default: billing-cli)")
    grant.add_argument("--org", required=True, help="the organization's name")
    grant.add_argument("--mode", choices=("test", "live"), default="live")

    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("BILLING_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    runners = {"dev": _dev, "serve": _serve, "migrate": _migrate, "keys": _keys,
               "ledger": _ledger_verify, "metering": _metering_dead_letters, "grant": _grant}
    try:
        _run(runners[args.command](settings, args))
    except KeyboardInterrupt:
        pass
    except SystemExit:
        raise
    except Exception as e:  # a clear one-line failure for operators
        log.error("%s", e, exc_info=log.isEnabledFor(logging.DEBUG))
        sys.exit(1)


def _service_names() -> list[str]:
    from services.specs import NAMES

    return list(NAMES)


def _run(coro) -> None:
    try:
        import uvloop
    except ImportError:  # uvloop is optional (not on Windows)
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _require_urls(settings: Settings) -> None:
    missing = [n for n, v in (("NATS_URL", settings.nats_url),
                              ("DATABASE_URL", settings.database_url)) if not v]
    if missing:
        raise SystemExit(f"billing: set {' and '.join(missing)} (or use `billing dev`)")


# ---- dev ---------------------------------------------------------------------------------


async def _dev(settings: Settings, args: argparse.Namespace) -> None:
    from services.platform import Platform, until_signalled
    from services.runtime import db, telemetry
    from services.runtime.embedded import EmbeddedNats, EmbeddedPostgres

    data_dir = Path(settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    embedded: list = []
    try:
        nats_url, database_url = settings.nats_url, settings.database_url
        if not nats_url:
            server = EmbeddedNats(data_dir / "nats")
            server.start()
            embedded.append(server)
            nats_url = server.url
        if not database_url:
            server = EmbeddedPostgres(data_dir / "pg")
            server.start()
            embedded.append(server)
            server.create_database("billing")
            database_url = server.url("billing")
        else:
            await db.ensure_database(database_url)
        settings = dataclasses.replace(
            settings, nats_url=nats_url, database_url=database_url,
            port=args.port if args.port is not None else settings.port,
            secrets_key=settings.secrets_key or _dev_secrets_key(data_dir))
        telemetry.configure(settings.otel_exporter, "billing-dev")
        platform = Platform(settings)
        await platform.start()
        try:
            test_key, live_key = await _dev_org(settings, platform.gateway.pool, data_dir)
            base = f"http://{settings.host}:{platform.gateway.port}"
            print(f"billing dev: gateway on {base}/api/v1  (NATS {nats_url}, "
                  f"PostgreSQL {_redact(database_url)})")
            print(f"billing dev: organization 'dev', test-mode secret key: {test_key}")
            if live_key:
                print(f"billing dev: organization 'dev', live-mode secret key: {live_key}")
            print(f"  try: curl -H 'Authorization: Bearer {test_key}' "
                  f"'{base}/api/v1/billing/balance?user=dev/alice'", flush=True)
            await until_signalled()
        finally:
            await platform.stop()
    finally:
        for server in reversed(embedded):
            server.stop()


async def _dev_org(settings: Settings, pool, data_dir: Path) -> tuple[str, str | None]:
    """The development organization `dev` and its secret keys, stable across restarts."""
    from services.gateway import store

    org = await store.provision_org(pool, "dev")
    env = settings.env
    test_key = env.get("BILLING_DEV_SECRET_KEY")
    if not test_key:
        # The key is stored hashed; keep the plaintext locally so a restart prints the same.
        saved = data_dir / "dev-secret-key"
        test_key = saved.read_text().strip() if saved.exists() else store.generate_key(
            "secret", livemode=False)
        saved.write_text(test_key + "\n")
        saved.chmod(0o600)
    await store.create_key(pool, settings.key_pepper, org, livemode=False, kind="secret",
                           name="dev-test-secret", plaintext=test_key)
    live_key = env.get("BILLING_DEV_LIVE_SECRET_KEY")
    if live_key:
        await store.create_key(pool, settings.key_pepper, org, livemode=True, kind="secret",
                               name="dev-live-secret", plaintext=live_key)
    return test_key, live_key


def _dev_secrets_key(data_dir: Path) -> str:
    """A key of this data directory's own for provider credentials (BILLING_SECRETS_KEY), so
    the development platform can store them; kept beside the data it opens."""
    from services.runtime.encryption import new_key

    saved = data_dir / "secrets-key"
    if not saved.exists():
        saved.touch(mode=0o600)
        saved.write_text(new_key() + "\n")
    return saved.read_text().strip()


def _redact(url: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urlunsplit(parts)


# ---- serve / migrate / keys --------------------------------------------------------------


async def _serve(settings: Settings, args: argparse.Namespace) -> None:
    from services.platform import until_signalled
    from services.runtime import telemetry
    from services.runtime.bus import Service
    from services.specs import NAMES, spec

    _require_urls(settings)
    telemetry.configure(settings.otel_exporter, f"billing-{args.service}")
    if args.service == "gateway":
        from services.gateway.app import Gateway

        unit = Gateway(settings)
    elif args.service in NAMES:
        unit = Service(spec(args.service), settings)
    else:
        raise SystemExit(f"billing: unknown or not yet built service {args.service!r}")
    await unit.start()
    # What starting made (modules, routes, pools, caches) lives as long as the process: out
    # of the collector's way, a full collection walks only what requests made since.
    gc.freeze()
    log.info("billing %s running", args.service)
    try:
        await until_signalled()
    finally:
        await unit.stop()


async def _migrate(settings: Settings, args: argparse.Namespace) -> None:
    import asyncpg

    from services.runtime import db
    from services.specs import migrations

    if not settings.database_url:
        raise SystemExit("billing: set DATABASE_URL")
    await db.ensure_database(settings.database_url)
    conn = await asyncpg.connect(settings.database_url)
    try:
        for schema, folder in migrations():
            applied = await db.migrate(conn, schema, folder)
            print(f"{schema}: {len(applied)} migration(s) applied")
    finally:
        await conn.close()


async def _keys(settings: Settings, args: argparse.Namespace) -> None:
    from services.gateway import store
    from services.runtime import db

    if not settings.database_url:
        raise SystemExit("billing: set DATABASE_URL")
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        if args.keys_command == "create":
            org = await store.provision_org(pool, args.org)
            kind = "publishable" if args.publishable else "secret"
            key_id, key = await store.create_key(pool, settings.key_pepper, org,
                                                 livemode=args.mode == "live", kind=kind,
                                                 name=args.name)
            print(f"{key}\n(key id {key_id}; this is the only time the key is shown)")
        else:
            key_hash = await store.revoke_key(pool, args.id)
            if key_hash is None:
                raise SystemExit(f"billing: no active key {args.id}")
            # The database tells every running gateway, which drops the key from its cache
            # at once (gateway migrations/002_api_key_changes.sql): no bus needed.
            print(f"revoked {args.id}")
    finally:
        await pool.close()


async def _ledger_verify(settings: Settings, args: argparse.Namespace) -> None:
    import asyncpg

    from services.ledger.balances import store
    from services.ledger.journal import store as journal_store

    if not settings.database_url:
        raise SystemExit("billing: set DATABASE_URL")
    conn = await asyncpg.connect(settings.database_url)
    try:
        mismatches = await store.verify(conn)
        journal_mismatches = await journal_store.verify(conn)
        lot_excesses = await store.verify_lots(conn)
        accounts = await conn.fetchval("select count(*) from ledger.balances")
        entries = await conn.fetchval("select count(*) from ledger.transactions")
    finally:
        await conn.close()
    # Postings sum to zero by construction (each transaction is one debit and one credit of
    # the same amount and currency); what can drift is a stored balance, so check those.
    for m in mismatches:
        mode = "live" if m["livemode"] else "test"
        print(f"MISMATCH org={m['org_id']} mode={mode} user={m['user_id']} "
              f"currency={m['currency']} stored={m['stored']} computed={m['computed']} "
              f"expiring stored={m['stored_expiring']} computed={m['computed_expiring']}")
    # Journal entries are checked for zero-sum per currency by a trigger at commit; what
    # can drift is a stored account balance.
    for m in journal_mismatches:
        mode = "live" if m["livemode"] else "test"
        print(f"MISMATCH journal org={m['org_id']} mode={mode} account={m['account_id']} "
              f"currency={m['currency']} stored={m['stored']} computed={m['computed']}")
    # A lot holding more than its entries allow would lapse money already spent.
    for (org_id, livemode, user_id, currency), lot in lot_excesses:
        mode = "live" if livemode else "test"
        print(f"MISMATCH lot org={org_id} mode={mode} user={user_id} currency={currency} "
              f"lot={lot.lot_id} unspent stored={lot.unspent} computed={lot.expected}")
    found = len(mismatches) + len(journal_mismatches) + len(lot_excesses)
    print(f"ledger verify: {entries} transactions, {accounts} balances, {found} mismatch(es)")
    if found:
        raise SystemExit(1)


async def _metering_dead_letters(settings: Settings, args: argparse.Namespace) -> None:
    import nats

    from services.metering import dead_letters
    from services.runtime.bus import nats_servers
    from services.runtime.meter_stream import ensure_dead_letter_stream

    if not settings.nats_url:
        raise SystemExit("billing: set NATS_URL")
    if args.action != "list" and not (args.seq or args.all):
        raise SystemExit(f"billing: {args.action} which? --seq N (repeatable) or --all")
    nc = await nats.connect(servers=nats_servers(settings.nats_url))
    try:
        js = nc.jetstream()
        await ensure_dead_letter_stream(js)
        letters = await dead_letters.listing(js)
        if args.action == "list":
            for d in letters:
                print(f"seq={d.seq} subject={d.subject} batch={d.batch_id or '-'} "
                      f"events={d.events if d.events is not None else '?'} "
                      f"deliveries={d.deliveries} error={d.error}")
            print(f"metering dead-letters: {len(letters)} batch(es)")
            return
        chosen = letters if args.all else [d for d in letters if d.seq in set(args.seq)]
        missing = set(args.seq) - {d.seq for d in chosen}
        act = dead_letters.replay if args.action == "replay" else dead_letters.discard
        done = await act(js, chosen)
        verb = "replayed" if args.action == "replay" else "discarded"
        print(f"metering dead-letters: {done} batch(es) {verb}")
        if missing:
            raise SystemExit(f"billing: no dead letter {', '.join(map(str, sorted(missing)))}")
    finally:
        await nc.close()


async def _grant(settings: Settings, args: argparse.Namespace) -> None:
    """The gift grant, asked of the subscriptions service over the bus as the platform."""
    import msgspec
    import nats

    from contracts import RawReply, Request
    from contracts.gifts import GIFT_GRANT, GiftGrantParams
    from services.gateway import store
    from services.runtime import db
    from services.runtime.bus import nats_servers
    from services.runtime.scopes import service_scope

    _require_urls(settings)
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        org = await store.org_by_name(pool, args.org)
    finally:
        await pool.close()
    if org is None:
        raise SystemExit(f"billing: no organization {args.org!r}")
    params = GiftGrantParams(userId=args.user, planId=args.plan, days=args.days,
                             reason=args.reason, grantedBy=args.by or "billing-cli")
    nc = await nats.connect(servers=nats_servers(settings.nats_url))
    try:
        request = Request(service_scope(org.id, args.mode == "live"), params)
        msg = await nc.request(GIFT_GRANT.subject, msgspec.json.encode(request), timeout=10)
    except nats.errors.NoRespondersError:
        raise SystemExit("billing: the subscriptions service is not running") from None
    finally:
        await nc.close()
    reply = msgspec.json.decode(msg.data, type=RawReply)
    if reply.error is not None:
        raise SystemExit(f"billing: grant refused: {reply.error.message}")
    gift = GIFT_GRANT.decode_result(reply.result)
    verb = "extended" if gift.extended else "granted"
    print(f"{verb} {gift.planSlug} to {gift.userId} until {gift.currentPeriodEnd}"
          f" (subscription {gift.subscriptionId})")


if __name__ == "__main__":
    main()
