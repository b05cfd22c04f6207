"""The gateway's on-disk store-and-forward spool (DESIGN.md sections 3 and 9).

Every message is committed here, with its persistent `seq`, before anything tries to publish
it; the publisher deletes it only after the broker's PUBACK. The spool is SQLite in WAL mode.

Durability: appends commit with `synchronous=FULL`. A spooled reading has been acknowledged to
nobody (a wM-Bus meter broadcasts and never hears back), so the spool is its only copy: in WAL
mode `NORMAL` survives a SIGKILL of the gateway (the WAL frames are in the OS page cache) but
not a power cut, which can take the last transactions with it. `FULL` fsyncs the WAL on every
commit, which is why `append_many` exists: one fsync per batch. Deletions after PUBACK and
quarantine moves commit with `NORMAL`: losing one to a power cut only sends a message again,
and `msg_id` makes that harmless; a later `FULL` commit syncs the WAL they sit in anyway.

Threads: each thread gets its own connection (a producer appends while the publisher reads and
deletes; WAL lets a reader run beside the writer), and writers take SQLite's write lock with
`BEGIN IMMEDIATE`, waiting up to `busy_timeout_s` for each other.

A row that cannot be published as it is (no topic, a payload that is not UTF-8 JSON or whose
`seq`/`msg_id` do not match the row) is moved to the `quarantine` table with the reason when it
is read, and counted; it is kept, never published and never allowed to stop the publisher. A
message that cannot be spooled at all (not JSON-serialisable, a meter id that cannot be a topic
level) is refused with MessageRefusedError, which names it, so that a producer can `set_aside` that
one message in the quarantine and spool the rest, where a StorageError of the disk is worth
retrying.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.messages import TOPIC_ROOT, Kind
from gateway.messages import topic as message_topic
from metergate.errors import StorageError

log = logging.getLogger(__name__)

_SCHEMA_VERSION = "1"
# outbox columns carry no NOT NULL or type constraints on purpose: whatever a damaged file holds
# must still be readable, so it can be quarantined instead of failing the read.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS spool_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS spool_counter (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, topic, meter_id, payload,"
    " spooled_at)",
    "CREATE TABLE IF NOT EXISTS quarantine (seq INTEGER PRIMARY KEY, topic, meter_id, payload,"
    " spooled_at, reason TEXT NOT NULL, quarantined_at REAL NOT NULL)",
)
_MAX_TOPIC_BYTES = 65535  # MQTT 5 section 1.5.4 / 3.1.1 section 1.5.3: UTF-8 string length


class MessageRefusedError(StorageError):
    """One message of a batch cannot be spooled as it is; `index` is its place in the batch.
    Retrying cannot help, unlike the StorageError of a full or failing disk."""

    def __init__(self, message: str, *, index: int) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True, slots=True)
class SpooledMessage:
    """One committed message: `payload` is the UTF-8 JSON with `seq` and `msg_id` set;
    `spooled_at` is the clock's Unix time at the commit (publish latency starts there)."""

    seq: int
    topic: str
    meter_id: str | None
    payload: bytes
    spooled_at: float


class _Local(threading.local):
    connection: sqlite3.Connection | None = None
    synchronous: str = ""


class Spool:
    """The spool file at `path`, belonging to `gateway_id` (a file of another gateway is
    refused, so two gateways never interleave their `seq`); messages go to topics under
    `topic_root`."""

    def __init__(
        self,
        path: str | Path,
        gateway_id: str,
        *,
        topic_root: str = TOPIC_ROOT,
        clock: Callable[[], float] = time.time,
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self.gateway_id = gateway_id
        self.topic_root = topic_root
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._local = _Local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._closed = False
        try:
            self._initialise()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def append(self, kind: Kind, meter_id: str | None, message: dict[str, Any]) -> SpooledMessage:
        """Commit one message (see `append_many`)."""
        return self.append_many([(kind, meter_id, message)])[0]

    def append_many(
        self, items: Iterable[tuple[Kind, str | None, dict[str, Any]]]
    ) -> list[SpooledMessage]:
        """Commit messages in one transaction (one fsync), giving each the next `seq`.

        `kind` is the topic kind ("reading" or "raw"). Each message dict gets `seq` and
        `msg_id` ("{gateway_id}:{seq}") once the transaction is committed. A message that is
        not JSON-serialisable, or a meter id that cannot be a topic level, raises
        MessageRefusedError and nothing of the batch is stored.
        """
        batch: list[tuple[str, str | None, dict[str, Any]]] = []
        for index, (kind, meter_id, message) in enumerate(items):
            try:
                topic = message_topic(self.gateway_id, meter_id, kind, self.topic_root)
                batch.append((topic, meter_id, message))
            except ValueError as exc:
                raise MessageRefusedError(f"cannot spool a message: {exc}", index=index) from None
        if not batch:
            return []
        spooled_at = self._clock()
        spooled: list[SpooledMessage] = []
        with self._write(durable=True, action="append to") as connection:
            (last,) = connection.execute(
                "UPDATE spool_counter SET value = value + ? WHERE name = 'seq' RETURNING value",
                (len(batch),),
            ).fetchone()
            for offset, (topic, meter_id, message) in enumerate(batch):
                seq = last - len(batch) + 1 + offset
                try:
                    payload = self._encode(seq, message)
                except (TypeError, ValueError) as exc:
                    raise MessageRefusedError(
                        f"message for seq {seq} is not JSON-serialisable: {exc}", index=offset
                    ) from None
                spooled.append(SpooledMessage(seq, topic, meter_id, payload, spooled_at))
            connection.executemany(
                "INSERT INTO outbox (seq, topic, meter_id, payload, spooled_at)"
                " VALUES (?, ?, ?, ?, ?)",
                [(m.seq, m.topic, m.meter_id, m.payload, m.spooled_at) for m in spooled],
            )
        for (_, _, message), item in zip(batch, spooled, strict=True):
            message["seq"] = item.seq
            message["msg_id"] = self._msg_id(item.seq)
        return spooled

    def set_aside(
        self, kind: Kind, meter_id: str | None, message: dict[str, Any], reason: str
    ) -> int:
        """Keep a message that `append_many` refused in the quarantine, as well as it can be
        written (values JSON cannot hold as their text; Python's repr of what JSON cannot hold
        at all), under the next `seq`, which it returns.
        It is never published; the quarantine keeps it for a person to look at."""
        try:
            payload = json.dumps(message, ensure_ascii=False, default=str).encode("utf-8")
        except (TypeError, ValueError):  # keys JSON cannot have, a structure that holds itself
            payload = repr(message).encode("utf-8", "backslashreplace")
        # The topic it would have had, unchecked: it may be why the message was refused.
        topic = f"{self.topic_root}/{self.gateway_id}/{meter_id or 'unknown'}/{kind}"
        now = self._clock()
        with self._write(durable=True, action="set aside in") as connection:
            (seq,) = connection.execute(
                "UPDATE spool_counter SET value = value + 1 WHERE name = 'seq' RETURNING value"
            ).fetchone()
            connection.execute(
                "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?)",
                (seq, topic, meter_id, payload, now, reason, now),
            )
        log.error("spool %s: a message set aside as seq %d: %s", self.path, seq, reason)
        return int(seq)

    def pending(self, limit: int, after_seq: int = 0) -> list[SpooledMessage]:
        """Up to `limit` messages with `seq` > `after_seq`, oldest first. Corrupted rows met on
        the way are quarantined and skipped."""
        result: list[SpooledMessage] = []
        cursor = after_seq
        while len(result) < limit:
            rows = self._read(
                "SELECT seq, topic, meter_id, payload, spooled_at FROM outbox"
                " WHERE seq > ? ORDER BY seq LIMIT ?",
                (cursor, limit - len(result)),
            )
            if not rows:
                break
            damaged: list[tuple[int, str]] = []
            for row in rows:
                checked = self._check(row)
                if isinstance(checked, str):
                    damaged.append((row[0], checked))
                else:
                    result.append(checked)
            cursor = rows[-1][0]
            if damaged:
                self._quarantine(damaged)
        return result

    def ack(self, seq: int) -> None:
        """Delete a message the broker acknowledged."""
        self.ack_many([seq])

    def ack_many(self, seqs: Sequence[int]) -> None:
        """Delete messages the broker acknowledged, in one transaction."""
        if not seqs:
            return
        with self._write(durable=False, action="delete from") as connection:
            connection.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def depth(self) -> int:
        """Messages waiting for a PUBACK."""
        return int(self._read("SELECT count(*) FROM outbox", ())[0][0])

    def quarantined(self) -> int:
        """Rows moved to quarantine since the spool file was made."""
        return int(self._read("SELECT count(*) FROM quarantine", ())[0][0])

    def last_seq(self) -> int:
        """The last `seq` given out (0 before the first message)."""
        return int(self._read("SELECT value FROM spool_counter WHERE name = 'seq'", ())[0][0])

    def close(self) -> None:
        """Close every thread's connection; later calls raise StorageError."""
        with self._connections_lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def _msg_id(self, seq: int) -> str:
        return f"{self.gateway_id}:{seq}"

    def _encode(self, seq: int, message: dict[str, Any]) -> bytes:
        # seq and msg_id go right after schema and gateway_id, where DESIGN.md section 3 shows them.
        head: dict[str, Any] = {k: message[k] for k in ("schema", "gateway_id") if k in message}
        body: dict[str, Any] = {
            **head,
            "seq": seq,
            "msg_id": self._msg_id(seq),
            **{k: v for k, v in message.items() if k not in head and k not in ("seq", "msg_id")},
        }
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    def _check(self, row: tuple[Any, ...]) -> SpooledMessage | str:
        """The message of an outbox row, or why it cannot be published."""
        seq, topic, meter_id, payload, spooled_at = row
        if not isinstance(topic, str) or not topic:
            return "topic is missing"
        if "+" in topic or "#" in topic or "\0" in topic:
            return "topic contains a wildcard or NUL"
        try:
            if len(topic.encode("utf-8")) > _MAX_TOPIC_BYTES:
                return "topic is longer than MQTT allows"
        except UnicodeEncodeError:
            return "topic is not valid Unicode"
        if meter_id is not None and not isinstance(meter_id, str):
            return "meter_id is not text"
        if not isinstance(payload, bytes):
            return "payload is not a BLOB"
        if isinstance(spooled_at, bool) or not isinstance(spooled_at, int | float):
            return "spooled_at is missing"
        try:
            document = json.loads(payload.decode("utf-8"))
        except UnicodeDecodeError:
            return "payload is not UTF-8"
        except ValueError:
            return "payload is not JSON"
        if not isinstance(document, dict):
            return "payload is not a JSON object"
        if document.get("seq") != seq or document.get("msg_id") != self._msg_id(seq):
            return "payload's seq or msg_id does not match the row"
        return SpooledMessage(seq, topic, meter_id, payload, float(spooled_at))

    def _quarantine(self, damaged: list[tuple[int, str]]) -> None:
        now = self._clock()
        with self._write(durable=False, action="quarantine in") as connection:
            for seq, reason in damaged:
                connection.execute(
                    "INSERT OR REPLACE INTO quarantine"
                    " SELECT seq, topic, meter_id, payload, spooled_at, ?, ? FROM outbox"
                    " WHERE seq = ?",
                    (reason, now, seq),
                )
                connection.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
        for seq, reason in damaged:
            log.warning("spool %s: row seq %d quarantined: %s", self.path, seq, reason)

    def _initialise(self) -> None:
        with self._write(durable=True, action="initialise") as connection:
            tables = {
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
            if tables and "spool_meta" not in tables:
                raise StorageError(
                    f"{self.path} is a SQLite database but not a metergate spool"
                    f" (it holds {', '.join(sorted(tables))}); point spool_path at another file"
                )
            for statement in _SCHEMA:
                connection.execute(statement)
            meta = dict(connection.execute("SELECT key, value FROM spool_meta").fetchall())
            if not meta:
                connection.executemany(
                    "INSERT INTO spool_meta (key, value) VALUES (?, ?)",
                    [("schema_version", _SCHEMA_VERSION), ("gateway_id", self.gateway_id)],
                )
                connection.execute("INSERT INTO spool_counter (name, value) VALUES ('seq', 0)")
            elif meta.get("schema_version") != _SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path}: spool schema version {meta.get('schema_version')!r}"
                    f" is not {_SCHEMA_VERSION!r}, the one this metergate writes"
                )
            elif meta.get("gateway_id") != self.gateway_id:
                raise StorageError(
                    f"{self.path} is the spool of gateway {meta.get('gateway_id')!r}, not"
                    f" {self.gateway_id!r}; publish it with that id or use another spool_path"
                )

    def _connection(self) -> sqlite3.Connection:
        connection = self._local.connection
        if connection is not None and not self._closed:
            return connection
        with self._connections_lock:
            if self._closed:
                raise StorageError(f"spool {self.path} is closed")
            try:
                connection = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout_s,
                    isolation_level=None,
                    check_same_thread=False,
                )
            except sqlite3.Error as exc:
                raise StorageError(f"cannot open the spool {self.path}: {exc}") from None
            try:
                (mode,) = connection.execute("PRAGMA journal_mode = WAL").fetchone()
            except sqlite3.Error as exc:
                connection.close()
                raise _storage_error(self.path, "open", exc) from None
            if mode != "wal":
                connection.close()
                raise StorageError(
                    f"{self.path}: SQLite cannot use WAL mode there (got {mode!r});"
                    " put the spool on a local file system"
                )
            self._connections.append(connection)
        self._local.connection = connection
        self._local.synchronous = ""
        return connection

    @contextmanager
    def _write(self, *, durable: bool, action: str) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        synchronous = "FULL" if durable else "NORMAL"
        try:
            if self._local.synchronous != synchronous:
                connection.execute(f"PRAGMA synchronous = {synchronous}")
                self._local.synchronous = synchronous
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            finally:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise _storage_error(self.path, action, exc) from None

    def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self._connection().execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise _storage_error(self.path, "read", exc) from None


def _storage_error(path: Path, action: str, exc: sqlite3.Error) -> StorageError:
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_NOTADB:
        return StorageError(
            f"{path} is not a SQLite database, so not a metergate spool;"
            " point spool_path at another file (this one was left as it is)"
        )
    return StorageError(f"cannot {action} the spool {path}: {exc}")
