"""Settings: one pydantic model read from settings.toml, overridden by environment variables.

Every setting has a default here and is documented in `settings.toml`. An environment variable
`LICENSE_SERVER_<NAME>` overrides a top-level setting and `LICENSE_SERVER_<SECTION>_<NAME>` one in
a section (so `LICENSE_SERVER_PORT`, `LICENSE_SERVER_RATE_LIMIT_ENABLED`). Unknown keys in the file
are errors, so that a typo does not silently leave a security setting at its default.

A bad value raises `SettingsError` whose message is one line naming the setting and where the
value came from; `run.py` prints it and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import limits
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

ENV_PREFIX = "LICENSE_SERVER_"


class SettingsError(Exception):
    """A setting is missing or invalid; the message is one line for the operator."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _rate(value: str) -> str:
    # Validated with the same parser the limiter uses, so a bad rate stops start-up.
    try:
        items = limits.parse_many(value)
    except ValueError:
        items = []
    # One limit per setting: limits.parse would silently keep only the first of several.
    if len(items) != 1 or items[0].amount < 1:
        raise ValueError(f"{value!r} is not one rate such as '60/minute'")
    return value


Rate = Annotated[str, AfterValidator(_rate)]

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


_DATABASE_SCHEMES = ("postgresql", "postgres")


def _database_location(value: Any) -> Any:
    """A SQLite file path, or a postgresql:// URL (kept as a secret: it may hold a password,
    and no log line or error message may print it). A URL of any other scheme is refused,
    never taken for a path: the server would silently create a SQLite file in a directory
    named after it, password included. The error never repeats the value."""
    if isinstance(value, SecretStr):
        return value
    if isinstance(value, str) and _URL_SCHEME.match(value):
        scheme = value.split("://", 1)[0].lower()
        if scheme not in _DATABASE_SCHEMES:
            raise ValueError(
                f"a {scheme}:// URL is not served (a SQLite file path or a postgresql:// URL "
                "is); the value is not shown, it may hold a password"
            )
        if not value.split("://", 1)[1].split("?", 1)[0].strip("/"):
            raise ValueError("a postgresql:// URL names a host and a database")
        return SecretStr(value)
    return Path(value) if isinstance(value, str) else value


def _redis_url(value: Any) -> Any:
    """redis://, rediss:// (TLS) or unix:// — kept as a secret, like the database URL."""
    if value is None or isinstance(value, SecretStr):
        return value
    if not isinstance(value, str) or not re.match(r"^(redis|rediss|unix)://", value):
        raise ValueError("a redis://, rediss:// or unix:// URL; the value is not shown")
    return SecretStr(value)


class VerifySettings(_Section):
    # Host patterns of development hosts (besides localhost, private IPs, *.test, ...): such a
    # host uses no seat only under a domain the license is bound to or allowed.
    dev_host_patterns: tuple[str, ...] = ("staging.*", "dev.*")
    # How long a license looked up by key is served from memory: a backstop only, changes by
    # any process are seen at the next check through the change log.
    cache_seconds: float = Field(60.0, ge=0, le=300)
    cache_size: int = Field(100_000, ge=0)
    # A request body that has not fully arrived after this many seconds is cut off (408).
    body_read_timeout_seconds: float = Field(10.0, gt=0, le=300)


class RateLimitSettings(_Section):
    enabled: bool = True
    # memory:// (one process) or async+redis://host:6379 (shared by several instances).
    storage_uri: str = "memory://"
    per_ip: Rate = "120/minute"
    per_key: Rate = "30/minute"
    # Stricter: unknown or forged keys from one IP (key guessing).
    unknown_key_per_ip: Rate = "10/minute"
    # The vendor API, per API key (its failed authentications spend unknown_key_per_ip).
    per_api_key: Rate = "600/minute"
    # Every refusal by a rate limit (429: verify, the vendor API, the admin's sign-in, the
    # customer page) is sent after this many seconds (web/tarpit.py), at most refusals_held
    # at once (past that, at once). 0: sent at once.
    refusal_hold_seconds: float = Field(1.0, ge=0, le=30)
    refusals_held: int = Field(256, ge=0, le=100_000)


class AttemptLogSettings(_Section):
    # Group commit: a batch is what waits when the previous commit returns (up to
    # batch_max_rows), plus whatever arrives within batch_max_delay_ms if that is set.
    batch_max_rows: int = Field(500, ge=1, le=100_000)
    batch_max_delay_ms: float = Field(0.0, ge=0, le=1000)
    # Attempts older than this are folded into hourly counts (rollup) and deleted.
    retention_days: int = Field(90, ge=1)
    rollup: bool = True
    prune_interval_seconds: int = Field(3600, ge=10)


class ProxySettings(_Section):
    # Peers whose X-Forwarded-For is believed (IPs or CIDRs). Empty: the TCP peer is the client.
    trusted_proxies: tuple[str, ...] = ()

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return (
            [part.strip() for part in value.split(",") if part.strip()]
            if isinstance(value, str)
            else value
        )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR range") from None
        return value


class StaffSettings(_Section):
    # Seed 000 asks for password rotation every 90-180 days; ASVS 4.0.3 V2.1.10 advises against
    # forced rotation. 0 (the default) is off; otherwise 90 to 180 days, as the seed writes it.
    password_max_age_days: int = 0
    # Security events (sign-in, MFA, denied, rate limited) older than this are deleted.
    security_event_retention_days: int = Field(365, ge=1, le=36500)

    # Staff-side detectors (issue #15, seed 003): a sign-in from a network (/24, /48) the
    # account has not signed in from within new_network_history_days raises an alert.
    new_network_alerts: bool = True
    new_network_history_days: int = Field(90, ge=1, le=3650)
    # More than sign_in_failure_limit failed sign-ins (password or code) from one IP within
    # sign_in_failure_window_seconds raise an alert and block that IP's admin sign-in for
    # sign_in_block_minutes (0: alert only).
    sign_in_failure_limit: int = Field(5, ge=1, le=1000)
    sign_in_failure_window_seconds: int = Field(300, ge=10, le=86400)
    sign_in_block_minutes: int = Field(60, ge=0, le=10080)

    @field_validator("password_max_age_days")
    @classmethod
    def _rotation(cls, value: int) -> int:
        if value != 0 and not 90 <= value <= 180:
            raise ValueError("0 (off) or 90 to 180 days")
        return value


class MetricsSettings(_Section):
    # Who may read GET /metrics: client addresses (after the trusted-proxy rule) in these
    # networks, or anyone with the bearer token (LICENSE_SERVER_METRICS_TOKEN, env only).
    allow_from: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    token: SecretStr | None = Field(None, min_length=32)
    # workers > 1: where each worker leaves its metrics for the others to serve ("" = a fresh
    # temporary directory made by the supervisor), and how often it writes them.
    directory: str = ""
    snapshot_seconds: float = Field(1.0, ge=0.1, le=60)

    @field_validator("allow_from", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return ProxySettings._split(value)  # the same list syntax as trusted_proxies

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return ProxySettings._networks(value)


class LoggingSettings(_Section):
    # "text": one line per record (the default); "json": one JSON object per line; "auto":
    # text when stderr is a terminal, JSON otherwise.
    format: str = Field("text", pattern=r"^(auto|text|json)$")


class PortalSettings(_Section):
    """The customer page /activate (web/portal/)."""

    # Keys that are not genuine, per IP and hour, before the page answers 429.
    guesses_per_hour: int = Field(10, ge=1, le=10_000)
    # A customer session ends after this many idle minutes, and at the latest after max_hours.
    session_idle_minutes: int = Field(30, ge=1, le=24 * 60)
    session_max_hours: int = Field(8, ge=1, le=72)
    # The page's address as customers reach it (https://licenses.example.com): the base of the
    # links in confirmation e-mails (never taken from the request's Host header).
    public_url: str = Field("", max_length=300, pattern=r"^(https?://[^/?#\s]+)?$")
    # E-mail confirmation of a release or reissue: on when smtp_host is set.
    smtp_host: str = Field("", max_length=253)
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_starttls: bool = True
    smtp_from: str = Field("", max_length=254)
    smtp_username: str = Field("", max_length=254)
    smtp_password: SecretStr | None = None  # env only: LICENSE_SERVER_PORTAL_SMTP_PASSWORD
    smtp_timeout_seconds: float = Field(20.0, gt=0, le=120)

    @model_validator(mode="after")
    def _mail_needs(self) -> PortalSettings:
        if self.smtp_host and not (self.smtp_from and self.public_url):
            raise ValueError("smtp_host: set smtp_from and public_url as well")
        return self

    @property
    def confirms_by_mail(self) -> bool:
        return bool(self.smtp_host)


class WebhookSettings(_Section):
    # false: this instance writes events to the outbox but sends none (another instance
    # sends them), e.g. instances kept for verification only.
    send: bool = True
    # A delivery attempt that has not finished (connect, send, answer) in this time failed.
    timeout_seconds: float = Field(10.0, gt=0, le=120)
    # Retries: the n-th waits a random time in [0, min(cap, base * 2^(n-1))] (full jitter);
    # a delivery that failed max_attempts times is marked failed (redeliver it by hand).
    retry_base_seconds: float = Field(10.0, gt=0, le=3600)
    retry_cap_seconds: float = Field(3600.0, gt=0, le=7 * 86400)
    max_attempts: int = Field(10, ge=1, le=100)
    # An endpoint that failed this many times in a row is paused and an alert is raised.
    pause_after_failures: int = Field(15, ge=1, le=100_000)
    # How often to look for deliveries due (other instances' events, retries); a commit that
    # wrote an event wakes this process's loop at once.
    poll_seconds: float = Field(5.0, gt=0, le=600)
    # Deliveries claimed and sent at once by one instance.
    batch_size: int = Field(50, ge=1, le=1000)
    # Delivered deliveries (and their attempt log) older than this are deleted.
    retention_days: int = Field(30, ge=1, le=3650)
    # verification.refused: at most this many events per license per minute; the rest are
    # counted in the next event for that license (data.suppressed).
    refused_per_license_per_minute: int = Field(5, ge=1, le=10_000)
    # SSRF protection (ASVS 4.0.3 V5.2.6, V12.6.1): endpoints on loopback, private,
    # link-local or otherwise non-public addresses are refused unless this is true.
    allow_private_targets: bool = False
    # https:// only, unless this is true.
    allow_http: bool = False
    # Licenses past their expiry date are marked expired (and license.expired sent) this often.
    expiry_sweep_seconds: float = Field(60.0, ge=1, le=86400)


AlertAction = Literal["none", "block_ip", "flag_license", "suspend_license"]
_DETECTOR_NAME = re.compile(r"^[a-z0-9_.-]{1,64}$")


class AlertActionSettings(_Section):
    """What the server does on its own when a detector raises an alert (off by default)."""

    # detector name -> "none" | "block_ip" | "flag_license" | "suspend_license".
    detectors: dict[str, AlertAction] = {}
    # How long a block_ip block lasts (verification and the admin sign-in).
    block_minutes: int = Field(60, ge=1, le=10080)

    @field_validator("detectors")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _DETECTOR_NAME.match(name):
                raise ValueError(f"{name!r} is not a detector name")
        return value

    def action(self, detector: str) -> str:
        return self.detectors.get(detector, "none")


class AnomalySettings(_Section):
    """The anomaly detectors (license_server/anomaly/); documented in settings.toml."""

    enabled: bool = True
    # Start-up rebuild: at most this many of the newest attempts of the longest window.
    rebuild_max_rows: int = Field(300_000, ge=0, le=10_000_000)
    # One raise per (detector, subject) per this many seconds at most (in memory).
    refire_seconds: int = Field(60, ge=1, le=86400)
    # Entries per in-memory map keyed by what a client sends (networks, key hashes, licenses).
    max_tracked: int = Field(100_000, ge=100, le=10_000_000)
    key_sharing_enabled: bool = True
    key_sharing_window_hours: int = Field(24, ge=1, le=168)
    key_sharing_extra_sites: int = Field(2, ge=0, le=1000)
    key_sharing_extra_networks: int = Field(3, ge=0, le=1000)
    key_guessing_enabled: bool = True
    key_guessing_window_minutes: int = Field(10, ge=1, le=1440)
    key_guessing_per_network: int = Field(30, ge=2, le=1_000_000)
    key_guessing_family_networks: int = Field(5, ge=2, le=100_000)
    domain_mismatch_enabled: bool = True
    domain_mismatch_window_minutes: int = Field(60, ge=1, le=1440)
    domain_mismatch_refusals: int = Field(30, ge=2, le=1_000_000)
    flooding_enabled: bool = True
    flooding_checks_per_hour: int = Field(60, ge=2, le=1_000_000)
    flooding_mads: float = Field(6.0, ge=0, le=1000)
    persistence_enabled: bool = True
    persistence_window_hours: int = Field(6, ge=1, le=168)
    persistence_checks: int = Field(20, ge=2, le=1_000_000)
    ip_mismatch_enabled: bool = True
    ip_mismatch_window_hours: int = Field(24, ge=1, le=168)
    ip_mismatch_installs: int = Field(3, ge=2, le=10_000)
    client_version_enabled: bool = True
    client_version_minimum: str = Field("", pattern=r"^(\d{1,6}(\.\d{1,6}){0,3})?$")
    client_version_major_lag: int = Field(2, ge=1, le=1000)
    client_version_window_hours: int = Field(1, ge=1, le=168)
    client_version_checks: int = Field(5, ge=1, le=1_000_000)
    churn_enabled: bool = True
    churn_window_days: int = Field(7, ge=1, le=90)
    churn_binds: int = Field(6, ge=2, le=100_000)
    churn_mads: float = Field(4.0, ge=0, le=1000)
    baseline_hours: int = Field(24, ge=1, le=24 * 14)
    baseline_min_licenses: int = Field(20, ge=3, le=1_000_000)


class Settings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # A SQLite file (the embedded default) or a postgresql:// URL (several instances).
    database: Annotated[Path | SecretStr, BeforeValidator(_database_location)] = Path(
        "data/license_server.db"
    )
    # Shared short-lived state of several instances (rate-limit counters unless
    # rate_limit.storage_uri is set on its own).
    redis_url: Annotated[SecretStr | None, BeforeValidator(_redis_url)] = None
    keys_dir: Path = Path("keys")
    issuer: str = Field("license-server", min_length=1, max_length=200)
    log_level: str = Field("INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    db_readers: int = Field(4, ge=1, le=32)
    # Server processes sharing the port (SO_REUSEPORT); more than one needs shared
    # rate-limit storage (rate_limit.storage_uri = redis://...).
    workers: int = Field(1, ge=1, le=64)
    # TLS served directly (PEM files): both or neither; TLS 1.2 is the minimum.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # "auto": uvloop (libuv-based, less CPU per check) where it is installed, as it is with the
    # package except on Windows, else the standard library's loop; "asyncio" or "uvloop" to
    # choose (uvloop then must be installed).
    event_loop: str = Field("auto", pattern=r"^(auto|asyncio|uvloop)$")
    # Key material for containers, env only (settings.toml must never hold secrets):
    # PEM private key(s), the last one active; base64 of 32 random bytes.
    signing_keys: SecretStr | None = None
    data_key: SecretStr | None = None
    verify: VerifySettings = VerifySettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    attempt_log: AttemptLogSettings = AttemptLogSettings()
    proxy: ProxySettings = ProxySettings()
    staff: StaffSettings = StaffSettings()
    metrics: MetricsSettings = MetricsSettings()
    logging: LoggingSettings = LoggingSettings()
    portal: PortalSettings = PortalSettings()
    webhooks: WebhookSettings = WebhookSettings()
    alert_actions: AlertActionSettings = AlertActionSettings()
    anomaly: AnomalySettings = AnomalySettings()

    @model_validator(mode="after")
    def _tls_both_or_neither(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: set both (PEM files) or neither")
        return self

    @model_validator(mode="after")
    def _shared_state_follows_redis_url(self) -> Settings:
        # memory:// is the default (and what settings.toml spells out): Redis replaces it.
        if self.redis_url is not None and self.rate_limit.storage_uri == "memory://":
            url = self.redis_url.get_secret_value()
            # limits' names for the same URLs: async+redis://, async+rediss://, and
            # async+redis+unix:// for a socket.
            scheme, rest = url.split("://", 1)
            scheme = "redis+unix" if scheme == "unix" else scheme
            shared = self.rate_limit.model_copy(update={"storage_uri": f"async+{scheme}://{rest}"})
            # Still constructing this (frozen) model: the one place that sets a field.
            object.__setattr__(self, "rate_limit", shared)
        return self

    def database_location(self) -> Path | str:
        """The database as the storage layer takes it: a path, or the URL with its secret."""
        if isinstance(self.database, SecretStr):
            return self.database.get_secret_value()
        return self.database


# Settings that may only come from the environment, never from the file.
ENV_ONLY = frozenset({"signing_keys", "data_key"})
# The same, in a section: (section, name).
ENV_ONLY_IN_SECTIONS = frozenset({("metrics", "token"), ("portal", "smtp_password")})


DEFAULT_FILE = Path("settings.toml")


def load_settings(
    path: Path | str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the settings file, apply `LICENSE_SERVER_*` overrides, validate.

    `path=None` means `./settings.toml` if it exists (defaults otherwise); a path given
    explicitly (`--config`) must exist.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    if path is None and DEFAULT_FILE.exists():
        path = DEFAULT_FILE
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SettingsError(f"settings file {path} does not exist")
        data = _read_toml(path)
        _reject_secrets_in_file(data, path)
        sources.update({loc: str(path) for loc in _leaf_paths(data)})
    for location, value, var in _environment_overrides(environ):
        _set_path(data, location, value)
        sources[location] = f"environment variable {var}"
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_one_line(exc, sources)) from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read: {exc.strerror}") from None


def _reject_secrets_in_file(data: dict[str, Any], path: Path) -> None:
    for name in ENV_ONLY & data.keys():
        var = ENV_PREFIX + name.upper()
        raise SettingsError(f"{path}: '{name}' is a secret; set it with {var}, not in the file")
    for section, name in ENV_ONLY_IN_SECTIONS:
        if isinstance(data.get(section), dict) and name in data[section]:
            var = f"{ENV_PREFIX}{section}_{name}".upper()
            raise SettingsError(
                f"{path}: '{section}.{name}' is a secret; set it with {var}, not in the file"
            )


def _environment_overrides(environ: Mapping[str, str]):
    """Yield (location, raw value, variable name) for every LICENSE_SERVER_* we know."""
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            for sub in annotation.model_fields:
                var = f"{ENV_PREFIX}{name}_{sub}".upper()
                if var in environ:
                    yield (name, sub), _env_value(environ[var]), var
        else:
            var = f"{ENV_PREFIX}{name}".upper()
            if var in environ:
                yield (name,), _env_value(environ[var]), var


def _env_value(raw: str) -> Any:
    # Lists come as JSON (`["10.0.0.1"]`) or comma-separated; pydantic coerces scalars.
    stripped = raw.strip()
    if stripped.startswith("["):
        try:
            return json.loads(stripped)
        except json.JSONDecodeError:
            return raw
    return raw


def _set_path(data: dict[str, Any], location: tuple[str, ...], value: Any) -> None:
    for key in location[:-1]:
        data = data.setdefault(key, {})
    data[location[-1]] = value


def _leaf_paths(data: Mapping[str, Any], prefix: tuple[str, ...] = ()):
    for key, value in data.items():
        if isinstance(value, Mapping):
            yield from _leaf_paths(value, (*prefix, key))
        else:
            yield (*prefix, key)


def _one_line(exc: ValidationError, sources: Mapping[tuple[str, ...], str]) -> str:
    error = exc.errors()[0]
    location = tuple(str(part) for part in error["loc"])
    name = ".".join(location)
    source = sources.get(location, "default")
    if error["type"] == "extra_forbidden":
        return f"unknown setting '{name}' (from {source})"
    given = error.get("input")
    shown = "" if isinstance(given, Mapping) or given is None else f" (got {given!r} from {source})"
    if location in (("database",), ("redis_url",)):
        shown = f" (from {source})"  # a database URL may hold a password: never echo it
    more = f"; and {len(exc.errors()) - 1} more" if len(exc.errors()) > 1 else ""
    message = error["msg"].removeprefix("Value error, ")
    return f"setting '{name}': {message}{shown}{more}"
