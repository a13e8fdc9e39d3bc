"""The `[upstream]` table of the gateway TOML: brokers, identity, TLS, credentials, batching, commands.

Secrets never live in the model's repr: passwords come from a file or an environment variable and
are read only when a connection is made (`UpstreamConfig.password()`), as a `SecretStr`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator, model_validator

from citynerve.gateway.api import STRICT, ConfigError, ConfigIssue, FiniteFloat, SecretPath, read_secret_text
from citynerve.gateway.logs import URL_SECRET

_STRICT = STRICT

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
TOPIC_PREFIX_MAX = 128
"""Longest `topic_prefix` (ASCII by its pattern): with a gateway id (at most 64 characters) every topic
stays a few hundred bytes, far under MQTT's 65,535 (a longer prefix failed every connect)."""
USERNAME_MAX = 4096
"""Longest broker `username`: room for a signed one (cloud custom authorizers), and in UTF-8 (at most
4 bytes a character) under MQTT's 65,535 bytes; a longer one failed every connect."""


def _is_control(c: str) -> bool:
    """A character an MQTT string must or should not hold: C0, DEL, C1 and lone surrogates."""
    n = ord(c)
    return n < 0x20 or 0x7F <= n <= 0x9F or 0xD800 <= n <= 0xDFFF


class _Model(BaseModel):
    model_config = _STRICT


class BrokerUrl(_Model):
    """One broker endpoint parsed from `mqtt://host:port` or `mqtts://host:port`."""

    scheme: Literal["mqtt", "mqtts"]
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def shown_url(url: str) -> str:
    """A broker URL as a message may quote it: what was written before its last @ (a user, a
    password) is not shown. Config check and run print their messages, and under systemd those
    go to the journal and from there into support bundles."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    if "@" in rest:
        rest = f"{URL_SECRET}@{rest.rpartition('@')[2]}"
    return repr(scheme + sep + rest)


def parse_broker_url(url: str) -> BrokerUrl:
    """Parse `mqtt[s]://host[:port]`; raises ValueError naming what is wrong."""
    parts = urlsplit(url.strip())
    shown = shown_url(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError(f"broker URL {shown}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"broker URL {shown}: no host")
    if parts.username or parts.password:
        raise ValueError(
            f"broker URL {shown}: credentials do not belong in the URL; use username/password_file"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {shown}: only scheme, host and port are allowed")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError as err:
        raise ValueError(f"broker URL {shown}: bad port") from err
    return BrokerUrl(scheme=parts.scheme, host=parts.hostname, port=port)  # type: ignore[arg-type]


class TlsConfig(_Model):
    """TLS for mqtts:// brokers. Server verification is on unless `verify = false` is written out."""

    ca_file: Path | None = Field(default=None, description="CA bundle; system CAs when unset")
    cert_file: Path | None = Field(default=None, description="client certificate (mTLS)")
    key_file: SecretPath | None = Field(default=None, description="client private key (mTLS)")
    verify: bool = True
    server_hostname: str | None = Field(default=None, description="name to verify instead of the URL host")
    expiry_warning_days: FiniteFloat = Field(
        default=30.0,
        ge=0,
        le=3650,
        description="warn (alarm certificate_expiry) this many days before the client cert or CA expires",
    )

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate for mTLS)")
        return self


class BackoffConfig(_Model):
    """Capped exponential backoff with jitter between connection attempts."""

    initial_s: FiniteFloat = Field(default=1.0, gt=0, le=300)
    max_s: FiniteFloat = Field(default=60.0, gt=0, le=3600)
    jitter: FiniteFloat = Field(default=0.5, ge=0, le=1, description="fraction of the delay drawn at random")

    @model_validator(mode="after")
    def _order(self) -> BackoffConfig:
        if self.max_s < self.initial_s:
            raise ValueError("max_s must be >= initial_s")
        return self


PermissionName = Literal["read", "operate", "configure", "update", "reboot"]


class CommandKeyConfig(_Model):
    """One platform key (`[[upstream.commands.keys]]`) and the permission classes it grants."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$", description="named in audit lines")
    hmac_key_file: SecretPath | None = None
    ed25519_public_key_file: Path | None = None
    classes: tuple[PermissionName, ...] = Field(
        min_length=1, description="permission classes this key grants (docs/fleet.md)"
    )

    @model_validator(mode="after")
    def _one_key(self) -> CommandKeyConfig:
        if (self.hmac_key_file is None) == (self.ed25519_public_key_file is None):
            raise ValueError("give exactly one of hmac_key_file or ed25519_public_key_file")
        return self


class CommandsConfig(_Model):
    """Signed commands from the platform: the key of the table itself (id "platform"; grants
    `classes`, by default everything but reboot) and/or several `keys`, each with its classes."""

    enabled: bool = False
    hmac_key_file: SecretPath | None = None
    ed25519_public_key_file: Path | None = None
    classes: tuple[PermissionName, ...] = Field(
        default=("read", "operate", "configure", "update"),
        description="permission classes the table's own key grants (reboot only when listed)",
    )
    keys: tuple[CommandKeyConfig, ...] = Field(
        default=(), max_length=32, description="more platform keys, each with an id and its classes"
    )
    max_clock_skew_s: FiniteFloat = Field(default=30.0, ge=0, le=3600)
    max_lifetime_s: FiniteFloat = Field(
        default=300.0, gt=0, le=86400, description="longest expires_at - issued_at accepted"
    )

    @model_validator(mode="after")
    def _one_key(self) -> CommandsConfig:
        keys = [k for k in (self.hmac_key_file, self.ed25519_public_key_file) if k is not None]
        if len(keys) > 1:
            raise ValueError("give either hmac_key_file or ed25519_public_key_file, not both")
        if self.enabled and not keys and not self.keys:
            raise ValueError(
                "commands are enabled but no key is provisioned "
                "(hmac_key_file, ed25519_public_key_file or [[upstream.commands.keys]])"
            )
        ids = [k.id for k in self.keys] + (["platform"] if keys else [])
        if len(set(ids)) != len(ids):
            raise ValueError('command key ids must be unique (the table\'s own key is "platform")')
        return self

    @property
    def has_key(self) -> bool:
        return bool(self.keys) or self.hmac_key_file is not None or self.ed25519_public_key_file is not None


class FilterConfig(_Model):
    """What a destination receives (`[upstream.filter]`); empty lists mean everything."""

    lanes: tuple[Literal["event", "telemetry"], ...] = Field(
        default=("event", "telemetry"), min_length=1, description="lanes sent to this destination"
    )
    devices: tuple[str, ...] = Field(
        default=(),
        max_length=100_000,
        description="device ids whose readings and events are sent (empty: all)",
    )
    event_kinds: tuple[str, ...] = Field(
        default=(), max_length=1000, description="event kinds sent (empty: all; outbox notices always go)"
    )
    min_severity: Literal["info", "warning", "minor", "major", "critical"] = Field(
        default="info", description="events below this severity are not sent"
    )


class SparkplugConfig(_Model):
    """Sparkplug B 3.0 settings of a destination with `encoding = "sparkplug-b"` (docs/sparkplug.md)."""

    group_id: str = Field(
        default="citynerve",
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="Sparkplug group id of this gateway (the edge node id is the gateway id)",
    )
    primary_host_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,64}$",
        description="publish only while this primary host application's STATE is online (none: always)",
    )
    data_qos: Literal[0, 1] = Field(
        default=1, description="QoS of births and data: 1 lets the outbox delete only acknowledged rows"
    )
    batch_records: int = Field(
        default=5000,
        ge=1,
        le=10_000,
        description="most records per publish round (a DDATA per device and round; 4 rounds in flight)",
    )


class UpstreamConfig(_Model):
    """How the gateway reaches one platform destination (an `[upstream]` table, or each of several
    `[[upstream]]` tables)."""

    id: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$",
        description="names the destination: its outbox positions, status and metrics",
    )
    enabled: bool = True
    filter: FilterConfig = Field(
        default_factory=FilterConfig, description="what this destination receives (lanes, devices, kinds)"
    )
    brokers: tuple[str, ...] = Field(min_length=1, description="failover order, mqtt:// or mqtts://")
    # Every topic is `<topic_prefix>/<gateway id>/...` (the will too): unbounded, a prefix over
    # 65,535 bytes passed and failed every connect with paho's untyped struct.error.
    topic_prefix: str = Field(
        default="citynerve", max_length=TOPIC_PREFIX_MAX, pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"
    )
    client_id: str | None = Field(
        default=None,
        max_length=128,
        description="defaults to `citynerve-<gateway id>` (`-<destination id>` after it but for the "
        "default destination); no control characters; two enabled destinations sharing a broker "
        "need different ones",
    )
    protocol: Literal["3.1.1", "5"] = "5"
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    connect_timeout_s: FiniteFloat = Field(default=10.0, gt=0, le=120)
    tls: TlsConfig = Field(default_factory=TlsConfig)
    username: str | None = Field(
        default=None, max_length=USERNAME_MAX, description="broker user name; no control characters"
    )
    password_file: SecretPath | None = None
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    encoding: Literal["json-v1", "sparkplug-b"] = Field(
        default="json-v1",
        description="json-v1 (docs/upstream-contract.md) or sparkplug-b (docs/sparkplug.md)",
    )
    sparkplug: SparkplugConfig = Field(
        default_factory=SparkplugConfig, description="Sparkplug B settings (encoding = sparkplug-b)"
    )
    max_batch_readings: int = Field(default=200, ge=1, le=10000)
    max_batch_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_inflight: int = Field(default=32, ge=1, le=1000, description="QoS 1 messages awaiting PUBACK")
    replay_max_msgs_per_s: FiniteFloat = Field(
        default=50.0, gt=0, description="telemetry rate after reconnect"
    )
    replay_burst: int = Field(default=20, ge=1)
    e2e_ack: bool = False
    e2e_resend_after_s: FiniteFloat = Field(
        default=30.0,
        gt=0,
        description="e2e mode: no platform ack progress this long -> send again from the ack",
    )
    status_interval_s: FiniteFloat = Field(default=60.0, gt=0)
    backoff: BackoffConfig = Field(default_factory=BackoffConfig)
    commands: CommandsConfig = Field(default_factory=CommandsConfig)

    @field_validator("brokers")
    @classmethod
    def _urls(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for url in v:
            parse_broker_url(url)
        return v

    @field_validator("client_id", "username")
    @classmethod
    def _mqtt_text(cls, v: str | None) -> str | None:
        # MQTT forbids NUL in its strings and brokers (Mosquitto) refuse other control characters:
        # such a client id or user name would fail every connect without saying why.
        if v is not None and any(_is_control(c) for c in v):
            raise ValueError("must not contain control characters (NUL, newline, ...) or lone surrogates")
        return v

    @field_validator("e2e_ack")
    @classmethod
    def _e2e_encoding(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("encoding") == "sparkplug-b":
            raise ValueError(
                "false with encoding = sparkplug-b: Sparkplug has no platform acks, rows leave the "
                "outbox on the broker's PUBACK (docs/sparkplug.md)"
            )
        return v

    @model_validator(mode="after")
    def _credentials(self) -> UpstreamConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give either password_file or password_env, not both")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError("a password needs a username")
        return self

    def broker_urls(self) -> list[BrokerUrl]:
        """The brokers in failover order."""
        return [parse_broker_url(u) for u in self.brokers]

    def effective_client_id(self, gateway_id: str) -> str:
        """`client_id`, or `citynerve-<gateway>` (`-<destination>` after it but for the default
        destination: two destinations on one broker must not take each other's session)."""
        if self.client_id:
            return self.client_id
        return f"citynerve-{gateway_id}" + ("" if self.id == "default" else f"-{self.id}")

    def password(self) -> SecretStr | None:
        """Read the password from its file or environment variable, at connect time only.

        Raises ConfigError (permanent) when the file or variable is missing: retrying will not help.
        """
        if self.password_file is not None:
            try:
                text = read_secret_text(self.password_file)
            except OSError as err:
                raise ConfigError(
                    [
                        ConfigIssue(
                            str(self.password_file), "upstream.password_file", f"cannot read: {err.strerror}"
                        )
                    ]
                ) from err
            except ValueError as err:  # over the bound, or not UTF-8 (UnicodeDecodeError)
                raise ConfigError(
                    [ConfigIssue(str(self.password_file), "upstream.password_file", str(err))]
                ) from err
            if not text:  # `config check` says the same: a file made and never written
                raise ConfigError(
                    [
                        ConfigIssue(
                            str(self.password_file),
                            "upstream.password_file",
                            f"{self.password_file} is empty: write the broker password in it",
                        )
                    ]
                )
            return SecretStr(text)
        if self.password_env is not None:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(
                    [
                        ConfigIssue(
                            "<environment>", "upstream.password_env", f"${self.password_env} is not set"
                        )
                    ]
                )
            return SecretStr(value)
        return None


def load_upstream_table(path: Path) -> UpstreamConfig:
    """Read only the `[upstream]` table of a gateway TOML (for `citynerve diag uplink`).

    Raises ConfigError naming the file and key path of every problem.
    """
    from pydantic import ValidationError

    from citynerve.gateway.config.tomlfile import read_toml

    data = read_toml(path)
    table = data.get("upstream")
    if not isinstance(table, dict):
        raise ConfigError([ConfigIssue(str(path), "upstream", "missing [upstream] table")])
    try:
        return UpstreamConfig.model_validate(table)
    except ValidationError as err:
        raise ConfigError(
            [
                ConfigIssue(str(path), ".".join(["upstream", *(str(p) for p in e["loc"])]), e["msg"])
                for e in err.errors()
            ]
        ) from err
