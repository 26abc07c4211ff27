"""The subcommands of `run.py`: serve (default), products, licenses, keys, backups, and the
store's operations (migrate, copy-store).

Scripts and deployments rely on these names, flags and outputs (`issue` prints the new key
alone on the last line of stdout), so they are kept stable. Every failure the operator can fix
is one line on stderr and a non-zero exit: 2 for bad usage or settings, 1 for a refused
operation (unknown key, duplicate product, refused transition).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import errno
import os
import re
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from pydantic import ValidationError

from license_server import log_format, log_masking
from license_server.crypto.keyfiles import KeyFileError
from license_server.crypto.keystore import KeyStore
from license_server.db.copy_store import (
    StoreError,
    copy_store,
    current_schema_version,
    open_store,
    schema_version_at,
    scrub,
)
from license_server.licensing.actors import CLI
from license_server.licensing.license_keys import KeyRejected
from license_server.licensing.lifecycle import Action, TransitionRefused
from license_server.licensing.models import License
from license_server.licensing.service import Conflict, NotFound
from license_server.licensing.signing_keys import SigningKeys, environment_keys, stored_keys
from license_server.licensing.specs import (
    LicenseSpec,
    ProductChanges,
    ProductSpec,
    end_of_day_utc,
)
from license_server.licensing.whmcs_export import ExportFormatError
from license_server.licensing.whmcs_import import import_export
from license_server.runtime import Runtime, open_runtime
from license_server.settings import Settings, SettingsError, load_settings
from license_server.staff.accounts import StaffAccounts

EXIT_REFUSED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A refused operation; printed as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="run.py", description="License server for WHMCS module vendors.")
    parser.add_argument("--config", type=Path, help="settings file (default ./settings.toml)")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    serve_parser = commands.add_parser("serve", help="serve HTTP (the default)")
    serve_parser.add_argument(
        "--workers", type=int, help="server processes on the port (default: setting 'workers')"
    )
    # Set by the supervisor of `--workers N` for each worker it starts.
    serve_parser.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)

    product = commands.add_parser("create-product", help="create a product")
    product.add_argument("--code", required=True)
    product.add_argument("--name", required=True)
    product.add_argument("--seats", type=int, default=1, help="domains per license (default 1)")
    product.add_argument("--key-prefix", help="readable key prefix, A-Z 0-9 (default from code)")
    product.add_argument("--local-key-days", type=int, default=7)
    product.add_argument("--grace-days", type=int, default=14)
    product.add_argument("--dev-hosts", type=int, default=3, help="free development hosts")
    product.add_argument("--feature", action="append", default=[], dest="features")
    product.add_argument("--whmcs-secret", help="secret of the WHMCS-compatible md5hash")
    product.add_argument("--max-reissues", type=int, help="reissue limit (default unlimited)")
    product.add_argument(
        "--reissue-cooldown-hours", type=int, default=0,
        help="hours between two customer reissues on /activate (default 0: none)",
    )  # fmt: skip
    product.add_argument("--free-trial", action="store_true", help="one trial per domain")
    for binding in ("domain", "ip", "directory"):
        product.add_argument(
            f"--allow-{binding}-conflict",
            action="store_true",
            help=f"WHMCS option: do not check the {binding} binding",
        )

    update = commands.add_parser("update-product", help="change a product's settings")
    update.add_argument("--code", required=True)
    update.add_argument("--name")
    update.add_argument("--seats", type=int)
    update.add_argument("--local-key-days", type=int)
    update.add_argument("--grace-days", type=int)
    update.add_argument("--dev-hosts", type=int)
    update.add_argument("--whmcs-secret")
    reissues = update.add_mutually_exclusive_group()
    reissues.add_argument("--max-reissues", type=int)
    reissues.add_argument("--unlimited-reissues", action="store_true")
    update.add_argument("--reissue-cooldown-hours", type=int)
    for flag in ("free-trial", "allow-domain-conflict", "allow-ip-conflict",
                 "allow-directory-conflict"):  # fmt: skip
        update.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction)

    issue = commands.add_parser("issue", help="issue a license; prints the key last")
    issue.add_argument("--product", required=True)
    issue.add_argument("--licensee", required=True)
    issue.add_argument("--email", required=True)
    issue.add_argument("--company", default="")
    issue.add_argument("--domain", action="append", default=[], dest="domains")
    issue.add_argument("--ip", action="append", default=[], dest="ips")
    issue.add_argument("--dir", action="append", default=[], dest="directories")
    issue.add_argument("--seats", type=int)
    issue.add_argument("--expires", type=_date, help="last valid day, YYYY-MM-DD (UTC)")
    issue.add_argument("--notes", default="")

    show = commands.add_parser("show", help="show the license of a key")
    show.add_argument("key")

    for action in (Action.SUSPEND, Action.UNSUSPEND, Action.EXPIRE, Action.REVOKE, Action.REISSUE):
        sub = commands.add_parser(action.value, help=f"{action.value} the license of a key")
        sub.add_argument("key")
    renew = commands.add_parser(Action.RENEW.value, help="set a new expiry (or --no-expiry)")
    renew.add_argument("key")
    when = renew.add_mutually_exclusive_group(required=True)
    when.add_argument("--expires", type=_date)
    when.add_argument("--no-expiry", action="store_true")

    ban = commands.add_parser("ban", help="ban a domain or IP: its checks answer suspended")
    ban.add_argument("kind", choices=("domain", "ip"))
    ban.add_argument("value")
    ban.add_argument("--reason", default="")
    unban = commands.add_parser("unban", help="lift a ban")
    unban.add_argument("kind", choices=("domain", "ip"))
    unban.add_argument("value")
    commands.add_parser("bans", help="list the bans")

    rotate = commands.add_parser(
        "rotate-keys", help="publish a new signing key (it signs only once activated)"
    )
    rotate.add_argument("--activate", metavar="KID", help="make this published key the signer")
    retire = commands.add_parser(
        "retire", help="stop publishing a signing key once nothing it signed is valid"
    )
    retire.add_argument("kid")
    commands.add_parser("keys", help="list the signing keys and their state")

    commands.add_parser(
        "audit-verify", help="check the audit log's hash chain; name the first broken row"
    )

    create_admin = commands.add_parser(
        "create-admin",
        help="print a one-time link (valid one hour) that creates an administrator account",
    )
    create_admin.add_argument(
        "--base-url", help="where staff reach the server (default: http://HOST:PORT)"
    )

    api_key = commands.add_parser(
        "create-api-key", help="make an API key for the vendor API; prints it once, last"
    )
    api_key.add_argument("--name", required=True, help="what uses it, e.g. 'WHMCS billing'")
    api_key.add_argument(
        "--scopes", required=True, help="comma-separated, e.g. license:*,product:read (or *)"
    )
    api_key.add_argument("--expires", type=_date, help="last valid day, YYYY-MM-DD (UTC)")

    backup = commands.add_parser(
        "backup", help="consistent online copy of the database (SQLite file or pg_dump archive)"
    )
    backup.add_argument("target", type=Path)

    commands.add_parser(
        "migrate", help="bring the configured database to the latest schema, then exit"
    )
    copy = commands.add_parser(
        "copy-store",
        help="copy every table from one database to an empty other one, then verify the copy",
    )
    copy.add_argument("source", metavar="FROM", help="SQLite file path or postgresql:// URL")
    copy.add_argument("target", metavar="TO", help="SQLite file path or postgresql:// URL")

    whmcs = commands.add_parser(
        "import-whmcs", help="import the licenses of a WHMCS Licensing Addon export"
    )
    whmcs.add_argument("file", type=Path, help="mod_licensing export: SQL dump or CSV")
    whmcs.add_argument("--product", required=True, help="code of the product the keys are for")
    whmcs.add_argument("--dry-run", action="store_true", help="check everything, write nothing")
    return parser


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date in YYYY-MM-DD form") from None


# A signing key's id (RFC 7638 thumbprint, base64url): about one in 64 starts with "-".
_KID = re.compile(r"-[A-Za-z0-9_-]{42}")


def _kid_arguments(argv: Sequence[str]) -> list[str]:
    """argparse takes a value starting with "-" for an option: a kid like "-Xq..." after
    `retire` or `--activate` is passed so that it stays a value."""
    fixed: list[str] = []
    for token in argv:
        if _KID.fullmatch(token) and fixed and fixed[-1] in ("retire", "--activate"):
            fixed.append(f"--activate={token}" if fixed.pop() == "--activate" else "retire")
            if fixed[-1] == "retire":
                fixed += ["--", token]
            continue
        fixed.append(token)
    return fixed


def main(argv: Sequence[str] | None = None) -> int:
    argv = _kid_arguments(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"run.py: settings error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Text or JSON lines; keys, e-mails and addresses masked in every one (ASVS 4.0.3 V7.1.1).
    log_format.configure(settings.log_level, settings.logging.format)
    command = args.command or "serve"
    try:
        if command == "serve":
            return serve(
                settings,
                config=args.config,
                workers=getattr(args, "workers", None),
                worker_index=getattr(args, "worker_index", None),
            )
        if command == "keys":
            return list_keys(settings)
        if command == "migrate":
            return asyncio.run(migrate(settings))
        if command == "copy-store":
            return asyncio.run(copy_store(args.source, args.target))
        return asyncio.run(_run_async(command, args, settings))
    except StoreError as exc:
        print(f"run.py {command}: {log_masking.mask_text(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error["loc"]) or "input"
        print(f"run.py {command}: {field}: {error['msg']}", file=sys.stderr)
        return EXIT_USAGE
    except (KeyFileError, SettingsError) as exc:
        print(f"run.py {command}: {log_masking.mask_text(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except (CommandError, NotFound, Conflict, TransitionRefused, KeyRejected, ValueError) as exc:
        print(f"run.py {command}: {log_masking.mask_text(str(exc))}", file=sys.stderr)
        return EXIT_REFUSED


def serve(
    settings: Settings,
    *,
    config: Path | None = None,
    workers: int | None = None,
    worker_index: int | None = None,
) -> int:
    from aiohttp import web

    from license_server.app import create_app
    from license_server.web.admin import first_run_link
    from license_server.web.serving import runner_options
    from license_server.workers import serve_workers

    if workers is not None and workers < 1:
        raise CommandError("--workers must be at least 1")
    count = settings.workers if workers is None else workers
    if count > 1 and worker_index is None:
        return serve_workers(settings, count, config)

    tls = _tls_context(settings)
    url = f"{'https' if tls else 'http'}://{settings.host}:{settings.port}"
    # Only one process of several runs the maintenance tasks (the attempt-log pruner) and
    # makes the first run's set-up link.
    app = create_app(settings, maintenance=not worker_index, worker=worker_index)

    def first_run() -> None:
        line = first_run_link(app, url)
        if line is not None:
            print(line, flush=True)

    def announce(_: str) -> None:
        print(f"License server listening on {url} (Ctrl+C to stop)", flush=True)
        first_run()

    try:
        web.run_app(
            app,
            host=settings.host,
            port=settings.port,
            reuse_port=worker_index is not None,
            ssl_context=tls,
            **runner_options(log_format.resolved_format(settings.logging.format)),
            # The supervisor announced the workers; worker 0 prints the set-up link, if any.
            print=announce if worker_index is None else lambda _: first_run(),
            loop=new_event_loop(settings.event_loop),
        )
    except OSError as exc:
        cause = _listen_failure(exc)
        if cause is None:
            raise
        where = f"{settings.host}:{settings.port}"
        print(f"run.py serve: cannot listen on {where}: {cause}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    """TLS 1.2 or newer with the configured certificate (ASVS 4.0.3 V9.1.2, V9.1.3); Python's
    server defaults choose the cipher suites. A file that cannot be read is a one-line error."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise CommandError(f"cannot use tls_cert/tls_key: {exc}") from None
    return context


def _listen_failure(exc: OSError) -> str | None:
    """The cause of a failed bind, in words an operator acts on; None for other OS errors."""
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (another server on this port?)"
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
        return os.strerror(exc.errno).lower()
    return None


# The values of setting `event_loop` (settings.py checks the same three).
EVENT_LOOPS = ("auto", "asyncio", "uvloop")


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """The serving loop of setting `event_loop`: "auto" is uvloop where it is installed (a
    dependency except on Windows; issue #16 measured 9-13% less CPU per check), else asyncio's."""
    if choice == "asyncio":
        return asyncio.new_event_loop()
    try:
        import uvloop
    except ImportError:
        if choice == "auto":
            return asyncio.new_event_loop()
        raise CommandError(
            "setting 'event_loop' is 'uvloop' but uvloop is not installed (pip install uvloop)"
        ) from None
    return uvloop.new_event_loop()


def _signing_keys(runtime: Runtime) -> SigningKeys:
    """The one piece of code the CLI and the staff admin share for key management."""
    settings = runtime.settings
    env_pem = settings.signing_keys.get_secret_value() if settings.signing_keys else None
    store = None if env_pem is not None else KeyStore(settings.keys_dir)
    return SigningKeys(runtime.licenses, store, runtime.keyring, env_pem)


async def _rotate_keys(runtime: Runtime, activate: str | None) -> int:
    keys = _signing_keys(runtime)
    if activate is not None:
        record = await keys.activate(activate, CLI)
        print(f"active signing key: {record.kid} (running servers switch within a second)")
        return 0
    key = await keys.add(CLI)
    print(f"published signing key {key.kid}; it does not sign yet.")
    print("Ship its public key in your modules (keep the keys they already have):")
    print(f"  PHP client, add to 'public_keys':\n    {key.php}")
    print(f'  Python client, add to the "keys" of the JWKS you ship:\n    {key.jwk}')
    print(f"Once those releases are out: run.py rotate-keys --activate {key.kid}")
    return 0


def list_keys(settings: Settings) -> int:
    if settings.signing_keys is not None:
        for key in environment_keys(settings.signing_keys.get_secret_value()):
            print(f"{key.kid}  {key.state:9}  (from LICENSE_SERVER_SIGNING_KEYS)")
        return 0
    print(f"{'kid':43}  {'state':9}  {'created':23}  activated")
    for key in stored_keys(KeyStore(settings.keys_dir)):
        print(
            f"{key.kid:43}  {key.state:9}  "
            f"{_format_time(key.created)}  {_format_time(key.signing_from)}"
        )
    return 0


async def _retire(runtime: Runtime, args: argparse.Namespace) -> int:
    record = await _signing_keys(runtime).retire(args.kid, CLI)
    print(f"retired signing key {record.kid}: no longer published (its file stays, unused)")
    return 0


async def _run_async(command: str, args: argparse.Namespace, settings: Settings) -> int:
    async with open_runtime(settings) as runtime:
        if command == "create-product":
            return await _create_product(runtime, args)
        if command == "update-product":
            return await _update_product(runtime, args)
        if command == "issue":
            return await _issue(runtime, args)
        if command == "show":
            _print_license(await _license_by_key(runtime, args.key))
            return 0
        if command == "backup":
            if args.target.exists():
                raise CommandError(f"{args.target} exists; choose a new file")
            await runtime.db.backup(args.target)
            print(f"backup written to {args.target}")
            return 0
        if command in ("ban", "unban", "bans"):
            return await _bans(runtime, command, args)
        if command == "import-whmcs":
            return await _import_whmcs(runtime, args)
        if command == "retire":
            return await _retire(runtime, args)
        if command == "rotate-keys":
            return await _rotate_keys(runtime, args.activate)
        if command == "create-admin":
            return await _create_admin(runtime, args)
        if command == "audit-verify":
            return await _audit_verify(runtime)
        if command == "create-api-key":
            return await _create_api_key(runtime, args)
        return await _lifecycle(runtime, Action(command), args)


async def _create_api_key(runtime: Runtime, args: argparse.Namespace) -> int:
    """An API key made from the shell (the admin's API keys page makes them too)."""
    from license_server.staff.api_keys import ApiKeys, NewApiKey

    scopes = tuple(part.strip() for part in args.scopes.split(",") if part.strip())
    new = NewApiKey(name=args.name, scopes=scopes, expires=args.expires)  # bad: exit 2
    key, secret = await ApiKeys(runtime.licenses).create(CLI, new)
    print(f"API key {key.prefix} ({key.name}): scopes {', '.join(key.scopes)}")
    print("Shown this once; only its hash is kept:")
    print(secret)
    return 0


async def _audit_verify(runtime: Runtime) -> int:
    checked, broken = await runtime.licenses.audit.verify(runtime.db)
    if broken is None:
        print(f"audit log: {checked} rows, the chain is intact")
        return 0
    print(
        f"audit log: row {broken.row_id} breaks the chain: {broken.why} "
        f"({checked} rows before it are intact)",
        file=sys.stderr,
    )
    return 1


async def _create_admin(runtime: Runtime, args: argparse.Namespace) -> int:
    """The shell's way to the first administrator (or another one, when every admin is
    locked out): anyone who runs this already controls the server."""
    service = runtime.licenses
    accounts = StaffAccounts(
        runtime.db, service.write, service.cipher, service.hasher, runtime.once
    )
    token = await accounts.first_admin_link(CLI)
    settings = runtime.settings
    base = (args.base_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    print("Open this link within the hour to create an administrator account (it works once):")
    print(f"{base}/admin/setup/{quote(token)}")
    return 0


async def migrate(settings: Settings) -> int:
    """`run.py migrate`: what every instance does at start-up (under the migration lock),
    once, by itself: for a rolling upgrade it runs before the new instances start."""
    location = settings.database_location()
    try:
        before = await schema_version_at(location)
    except Exception as exc:  # the database cannot be reached: one line, no traceback
        raise StoreError(f"cannot read the schema version: {scrub(str(exc), location)}") from None
    db = await open_store(location)  # migrates
    try:
        after = await current_schema_version(db)
    finally:
        await db.close()
    change = f"{before} -> {after}" if after != before else f"{after} (nothing to do)"
    print(f"{db.describe()}: schema version {change}")
    return 0


async def _create_product(runtime: Runtime, args: argparse.Namespace) -> int:
    spec = ProductSpec(
        code=args.code,
        name=args.name,
        key_prefix=args.key_prefix,
        seats=args.seats,
        local_key_days=args.local_key_days,
        grace_days=args.grace_days,
        dev_host_allowance=args.dev_hosts,
        features=tuple(args.features),
        whmcs_secret=args.whmcs_secret,
        max_reissues=args.max_reissues,
        reissue_cooldown_hours=args.reissue_cooldown_hours,
        free_trial=args.free_trial,
        allow_domain_conflict=args.allow_domain_conflict,
        allow_ip_conflict=args.allow_ip_conflict,
        allow_directory_conflict=args.allow_directory_conflict,
    )
    product = await runtime.licenses.create_product(spec, actor=CLI)
    print(f"created product {product.code} ({product.name}), key prefix {product.key_prefix}")
    return 0


async def _update_product(runtime: Runtime, args: argparse.Namespace) -> int:
    changes = ProductChanges(
        name=args.name,
        seats=args.seats,
        local_key_days=args.local_key_days,
        grace_days=args.grace_days,
        dev_host_allowance=args.dev_hosts,
        whmcs_secret=args.whmcs_secret,
        max_reissues=args.max_reissues,
        unlimited_reissues=args.unlimited_reissues,
        reissue_cooldown_hours=args.reissue_cooldown_hours,
        free_trial=args.free_trial,
        allow_domain_conflict=args.allow_domain_conflict,
        allow_ip_conflict=args.allow_ip_conflict,
        allow_directory_conflict=args.allow_directory_conflict,
    )
    product = await runtime.licenses.update_product(args.code, changes, actor=CLI)
    print(f"updated product {product.code} ({product.name})")
    return 0


async def _issue(runtime: Runtime, args: argparse.Namespace) -> int:
    spec = LicenseSpec(
        product=args.product,
        licensee=args.licensee,
        email=args.email,
        company=args.company,
        domains=tuple(args.domains),
        ips=tuple(args.ips),
        directories=tuple(args.directories),
        seats=args.seats,
        expires=args.expires,
        notes=args.notes,
    )
    license, key = await runtime.licenses.issue(spec, actor=CLI)
    print(
        f"issued license {license.id} for {license.licensee_name} ({license.product.code}), "
        f"expires {_format_expiry(license.expires_at)}"
    )
    print(key)
    return 0


async def _bans(runtime: Runtime, command: str, args: argparse.Namespace) -> int:
    if command == "ban":
        value = await runtime.bans.ban(args.kind, args.value, args.reason, actor=CLI)
        print(f"banned {args.kind} {value}")
    elif command == "unban":
        if not await runtime.bans.unban(args.kind, args.value, actor=CLI):
            raise CommandError(f"{args.kind} {args.value} is not banned")
        print(f"unbanned {args.kind} {args.value}")
    else:
        for ban in await runtime.bans.all():
            reason = f"  ({ban['reason']})" if ban["reason"] else ""
            print(f"{ban['kind']:6}  {ban['value']}{reason}")
    return 0


async def _license_by_key(runtime: Runtime, key: str) -> License:
    # Bytes that are not UTF-8 reach argv as surrogate escapes (PEP 383); no key contains
    # them, and hashing them would raise a codec error instead of saying what is wrong.
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError("not a license key (it contains bytes that are not UTF-8)") from None
    return await runtime.licenses.license_by_key(key)


async def _lifecycle(runtime: Runtime, action: Action, args: argparse.Namespace) -> int:
    license = await _license_by_key(runtime, args.key)
    options: dict[str, object] = {}
    if action is Action.RENEW:
        options["new_expiry"] = None if args.no_expiry else end_of_day_utc(args.expires)
    updated = await runtime.licenses.apply(license.id, action, actor=CLI, **options)
    expiry = f", expires {_format_expiry(updated.expires_at)}" if action is Action.RENEW else ""
    print(f"license {updated.id}: {license.status} -> {updated.status}{expiry}")
    return 0


def _format_time(timestamp: int | None) -> str:
    if timestamp is None:
        return "never"
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _format_expiry(expires_at: int | None) -> str:
    """The last valid day, as the operator gave it: the stored instant is the end of that day
    (`end_of_day_utc`), which printed as a time would read as the day after."""
    if expires_at is None:
        return "never"
    if expires_at % 86_400:  # not at a UTC midnight (set another way): the exact instant
        return f"{_format_time(expires_at)} (valid until then)"
    last_day = dt.datetime.fromtimestamp(expires_at - 1, dt.UTC).date()
    return f"{last_day.isoformat()} (valid through that day, UTC)"


def _print_license(license: License) -> None:
    lines = [
        ("license", str(license.id)),
        ("product", f"{license.product.code} ({license.product.name})"),
        ("status", license.status.value),
        ("key kind", license.key_kind.value),
        ("licensee", license.licensee_name),
        ("company", license.licensee_company or "-"),
        ("email", license.licensee_email),
        ("expires", _format_expiry(license.expires_at)),
        ("seats", str(license.seats)),
        ("reissues", str(license.reissue_count)),
        ("allowed domains", ", ".join(license.rules_of("domain")) or "any"),
        ("allowed IPs", ", ".join(license.rules_of("ip")) or "any"),
        ("allowed dirs", ", ".join(license.rules_of("directory")) or "any"),
        ("created", _format_time(license.created_at)),
    ]
    for binding in license.bindings:
        dev = " (development host)" if binding.is_dev else ""
        lines.append((f"bound {binding.kind}", f"{binding.value}{dev}"))
    if license.notes:
        lines.append(("notes", license.notes))
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        print(f"{label.ljust(width)}  {value}")


# --- import-whmcs ------------------------------------------------------------------------

_MAX_BAD_ROWS_SHOWN = 100


async def _import_whmcs(runtime: Runtime, args: argparse.Namespace) -> int:
    try:
        report = await _import_with_progress_bar(runtime, args)
    except ExportFormatError as exc:  # its message already names the file
        print(f"run.py import-whmcs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # missing or unreadable file
        print(f"run.py import-whmcs: {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USAGE
    for bad in report.bad[:_MAX_BAD_ROWS_SHOWN]:
        print(f"{args.file}:{bad.line}: {bad.reason}", file=sys.stderr)
    if len(report.bad) > _MAX_BAD_ROWS_SHOWN:
        print(f"... and {len(report.bad) - _MAX_BAD_ROWS_SHOWN} more", file=sys.stderr)
    skipped = f"skipped {len(report.bad)} bad row{'' if len(report.bad) == 1 else 's'}"
    if report.dry_run:
        print(f"dry run: would import {report.imported}, ", end="")
    else:
        print(f"imported {report.imported}, ", end="")
    print(f"already present {report.already_present}, {skipped}")
    # Skipped rows must not go unnoticed by scripts that run the import.
    return EXIT_REFUSED if report.bad else 0


class _ProgressBar:
    """`[#####     ]  45%  123,456 rows` redrawn in place on a terminal."""

    WIDTH = 30

    def __init__(self, stream) -> None:
        self.stream = stream
        self.drawn = False

    def update(self, done: int, total: int, rows: int) -> None:
        fraction = done / total if total else 1.0
        filled = int(fraction * self.WIDTH)
        bar = "#" * filled + " " * (self.WIDTH - filled)
        self.stream.write(f"\r[{bar}] {fraction:4.0%}  {rows:,} rows")
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


async def _import_with_progress_bar(runtime: Runtime, args: argparse.Namespace):

    # Only on a terminal: in a log file the redrawn line would be noise.
    bar = _ProgressBar(sys.stderr) if sys.stderr.isatty() else None
    try:
        return await import_export(
            runtime.licenses,
            args.file,
            args.product,
            dry_run=args.dry_run,
            actor=CLI,
            on_progress=bar.update if bar else None,
        )
    finally:
        if bar is not None:
            bar.finish()  # before any message, so it does not land on the bar's line
