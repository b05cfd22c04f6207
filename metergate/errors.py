"""The error hierarchy shared by every part (DESIGN.md section 8).

Messages never carry key bytes: a key is secret material, and messages end up in logs, MQTT
payloads and API answers.
"""

from __future__ import annotations


class MetergateError(Exception):
    """Root of every error metergate raises on purpose."""


class DecodeError(MetergateError):
    """Bytes that cannot be turned into a telegram; the only family decoders/ raises.

    `offset` is the byte position in `data` where the problem was found (None when it concerns
    the frame as a whole).
    """

    def __init__(self, message: str, *, offset: int | None = None, data: bytes = b"") -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.data = data


class FrameError(DecodeError):
    """The framing is wrong: length, start or stop byte, truncation."""


class ChecksumError(FrameError):
    """A checksum or CRC does not match."""


class UnsupportedError(DecodeError):
    """Well-formed, but uses a feature this decoder does not implement."""


class DecryptionError(DecodeError):
    """Decryption failed its check (wrong key, bad MAC, corrupted ciphertext)."""


class MissingKeyError(DecodeError):
    """The payload is encrypted and no key was given.

    `header` holds what could be decoded without the key (for wM-Bus the envelope: link
    address, ELL, TPL header; for wired M-Bus the TPL header), so the caller still knows which
    meter sent it.
    """

    def __init__(
        self,
        message: str,
        *,
        offset: int | None = None,
        data: bytes = b"",
        header: object | None = None,
    ) -> None:
        super().__init__(message, offset=offset, data=data)
        self.header = header


class TransportError(MetergateError):
    """Moving bytes failed (port gone, connection refused); worth retrying."""

    retryable = True


class DeviceTimeout(TransportError, TimeoutError):  # noqa: N818 - the name DESIGN.md gives
    """The device did not answer within the protocol's time limit."""


class DeviceError(MetergateError):
    """The device answered, with an error."""


class ConfigError(MetergateError):
    """Configuration that cannot be used; raised at start-up only.

    `path` names the file, `location` the key or line inside it.
    """

    def __init__(self, message: str, *, path: str | None = None, location: str | None = None):
        where = ":".join(part for part in (path, location) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.path = path
        self.location = location


class PublishError(MetergateError):
    """A message could not be handed to the broker."""


class StorageError(MetergateError):
    """The database or the spool refused a write or a read."""
