"""Where the MQTT broker is and how to log in: shared by the gateway's config and publisher."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

from metergate.errors import ConfigError

_DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """An MQTT broker connection. `protocol` 5 is MQTT 5, 4 is MQTT 3.1.1."""

    host: str
    port: int = 1883
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None
    keepalive_s: int = 60
    protocol: Literal[4, 5] = 5

    @classmethod
    def from_url(cls, url: str, *, path: str = "<url>", location: str = "url") -> BrokerConfig:
        """mqtt://[user[:password]@]host[:port] or mqtts://... (TLS, port 8883 by default)."""
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS:
            raise ConfigError(
                f"a broker URL starts with mqtt:// or mqtts://, not {parts.scheme or url!r}",
                path=path,
                location=location,
            )
        try:
            port = parts.port or _DEFAULT_PORTS[parts.scheme]
        except ValueError:
            raise ConfigError(
                "the broker URL's port is not a number", path=path, location=location
            ) from None
        if not parts.hostname:
            raise ConfigError("the broker URL names no host", path=path, location=location)
        return cls(
            host=parts.hostname,
            port=port,
            tls=parts.scheme == "mqtts",
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )
