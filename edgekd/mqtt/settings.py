"""MQTT settings: where to publish, as whom, and how hard to try.

Loaded once at start (from the config file, the environment and CLI flags; see edgekd's config
module) and passed down. Credentials are never needed in argv: `password` is a SecretStr (its
repr and str are redacted, it is never logged) and may instead be read from `password_file`, or
under systemd from the credential `mqtt-password` (LoadCredential=, read from $CREDENTIALS_DIRECTORY).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from edgekd.inputfile import file_problem
from edgekd.mqtt.topics import check_part, check_prefix, default_device_id
from edgekd.mqtt.url import BrokerUrl, parse_broker_url


SYSTEMD_CREDENTIAL = "mqtt-password"  # $CREDENTIALS_DIRECTORY/mqtt-password, if the unit loads it


class MqttSettings(BaseModel):
    # hide_input_in_errors: a rejected URL or password must not be echoed into logs.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    url: str = Field(
        "mqtt://localhost:1883",
        description="broker: mqtt://HOST[:PORT], mqtts://HOST[:PORT] (TLS), HOST[:PORT], or "
        "'embedded' to start an in-process broker on loopback",
    )
    qos: Literal[0, 1, 2] = Field(1, description="QoS of results (status is always QoS 1)")
    prefix: str = Field("edgekd", description="first topic level(s): <prefix>/<device>/<task>")
    device_id: str = Field(default_factory=default_device_id, description="default: the host name, sanitised")
    client_id: str = Field("", description="MQTT client id; default edgekd-<device_id>")
    username: str | None = None
    password: SecretStr | None = Field(None, description="prefer password_file or the environment")
    password_file: Path | None = Field(None, description="file whose first line is the password")
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate (mqtts)")
    cert_file: Path | None = Field(None, description="client certificate for mutual TLS (mqtts)")
    key_file: Path | None = Field(None, description="client key for mutual TLS (mqtts)")
    tls_insecure: bool = Field(False, description="skip broker certificate verification (testing only)")
    queue_size: int | None = Field(
        None, ge=1, le=10_000_000,
        description="results held while the broker is away (default 100000 with the disk outbox, 1000 in memory)",
    )
    outbox: Literal["disk", "memory"] = Field(
        "disk", description="where results wait for the broker's acknowledgement: a SQLite file that survives "
        "restarts and power loss, or memory (lost on exit, nothing written to disk)",
    )
    outbox_path: Path | None = Field(
        None, description="the SQLite outbox; default $STATE_DIRECTORY (systemd), else ~/.local/state/edgekd, "
        "/outbox-<device_id>.sqlite3",
    )
    outbox_max_age: float = Field(
        7 * 24 * 3600.0, ge=1, description="seconds an unsent result is kept, then dropped (at least 1)"
    )
    keepalive: int = Field(30, ge=5, le=3600, description="seconds between MQTT pings")
    # at least 0.05 s: a shorter delay would hammer a broker that is down or refusing us
    reconnect_min: float = Field(1.0, ge=0.05, le=3600, description="first reconnect delay, seconds")
    reconnect_max: float = Field(60.0, ge=0.05, le=3600, description="longest reconnect delay, seconds")
    protocol: Literal["auto", "5", "3.1.1"] = Field(
        "auto", description='MQTT version: "5", "3.1.1", or "auto" (5, falling back to 3.1.1 if the broker refuses it)'
    )
    result_expiry: int | None = Field(
        None, ge=1, le=4_294_967_295,
        description="MQTT 5 only: seconds the broker keeps an undelivered result (message expiry); default never",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_broker_url(value)
        return value.strip()

    @field_validator("username", "password")
    @classmethod
    def _utf8(cls, value: str | SecretStr | None, info: ValidationInfo) -> str | SecretStr | None:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        try:
            (text or "").encode("utf-8")
        except UnicodeEncodeError:  # bytes from the environment that are not UTF-8; never quoted
            raise ValueError(
                f"{info.field_name} is not UTF-8 text (the environment gave bytes that are not); set it as UTF-8"
            ) from None
        return value

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value  # protocol = 5 in TOML

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_prefix(value)

    @field_validator("device_id")
    @classmethod
    def _device(cls, value: str) -> str:
        return check_part(value, "device_id")

    @field_validator("client_id")
    @classmethod
    def _client(cls, value: str) -> str:
        if len(value) > 128 or any(ord(c) < 32 for c in value):
            raise ValueError("client_id must be at most 128 printable characters")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> MqttSettings:
        if not self.client_id:
            # object.__setattr__ avoids re-running validation (validate_assignment) recursively.
            object.__setattr__(self, "client_id", f"edgekd-{self.device_id}")
        if self.password is not None and self.password_file is not None:
            raise ValueError("set either password or password_file, not both")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password is set but username is not; set username too")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set without cert_file; mutual TLS needs both")
        tls_keys = [k for k in ("ca_file", "cert_file", "key_file") if getattr(self, k) is not None]
        if self.tls_insecure:
            tls_keys.append("tls_insecure")
        if tls_keys and not self.broker.tls and not self.broker.embedded:
            raise ValueError(
                f"{', '.join(tls_keys)} set but url {self.url!r} is not TLS; use mqtts://HOST[:PORT]"
            )
        for key in ("password_file", "ca_file", "cert_file", "key_file"):
            path = getattr(self, key)
            problem = None if path is None else file_problem(path, f"set {key} to a readable file")
            if problem is not None:
                raise ValueError(f"{key} {str(path)!r} {problem.replace('no such file', 'does not exist', 1)}")
        if self.reconnect_min > self.reconnect_max:
            raise ValueError(
                f"reconnect_min ({self.reconnect_min}) must not exceed reconnect_max ({self.reconnect_max})"
            )
        return self

    @property
    def queue_limit(self) -> int:
        """queue_size, or its default for the outbox kind."""
        if self.queue_size is not None:
            return self.queue_size
        return 100_000 if self.outbox == "disk" else 1000

    @property
    def broker(self) -> BrokerUrl:
        return parse_broker_url(self.url)

    def password_value(self) -> str | None:
        """The password from `password`, the first line of `password_file`, or, when a username is
        set and neither is, the systemd credential `mqtt-password` ($CREDENTIALS_DIRECTORY, from
        LoadCredential=mqtt-password:FILE in the unit). Read now, never logged."""
        if self.password is not None:
            return self.password.get_secret_value()
        path = self.password_file
        if path is None:
            creds = os.environ.get("CREDENTIALS_DIRECTORY")
            candidate = Path(creds) / SYSTEMD_CREDENTIAL if creds else None
            if not self.username or candidate is None or not candidate.is_file():
                return None
            path = candidate
        problem = file_problem(path, "point password_file at a file whose first line is the password")
        if problem is not None:
            raise MqttCredentialsError(f"password_file {str(path)!r} {problem}")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise MqttCredentialsError(
                f"cannot read password_file {str(path)!r}: {exc.strerror}; "
                "check the path and that this user may read it"
            ) from None
        except UnicodeDecodeError as exc:  # the offending byte is not quoted: it is part of the password
            raise MqttCredentialsError(
                f"password_file {str(path)!r} is not UTF-8 text (byte offset {exc.start}); save the password "
                "as UTF-8 text on the file's first line"
            ) from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise MqttCredentialsError(f"password_file {str(path)!r} is empty; put the password on its first line")
        return lines[0]

    def with_url(self, url: str) -> MqttSettings:
        """A copy pointing at another broker (e.g. an EmbeddedBroker's `.url`), validated."""
        data = self.model_dump()
        data["url"] = url
        return MqttSettings.model_validate(data)


class MqttCredentialsError(ValueError):
    """The credentials could not be read. The message names the file and the fix."""
