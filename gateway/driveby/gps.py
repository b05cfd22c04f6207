"""Where the van is: an NMEA 0183 GPS receiver on a serial port, read with pyserial and pynmea2.

GpsState is pure: bytes in, the latest fix and counters out, the host's monotonic time an
argument. GpsReader runs it on a thread over a SerialPort and keeps reading through anything:
a bad sentence is counted (checksum errors apart), a receiver that vanishes (a USB plug pulled
on a bumpy road) is reopened with backoff for as long as the drive lasts. A GPS is optional to
a drive-by, so nothing here ever stops it.

A position is given only while the receiver says it has a fix (GGA quality 1-5, RMC status A
with a mode indicator A/D/F/R/P or none) and for `stale_after_s` seconds after the last one: a
reading must not carry a place the van left minutes ago. An explicit "no fix" from the receiver
drops the position at once.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from types import TracebackType

import pynmea2  # type: ignore[import-untyped]  # pynmea2 ships no type hints

from drivers.serial_port import Backoff, SerialPort
from gateway.frames import Location
from metergate.errors import ChecksumError, DecodeError, FrameError, TransportError

# NMEA 0183 §5.3 limits a sentence to 82 characters; proprietary ones (u-blox PUBX,03 with
# many satellites) run longer, so a line is kept up to this before it counts as garbage.
MAX_SENTENCE = 200
# GGA field 6 (NMEA 0183 v4.10): 1 GPS, 2 DGPS, 3 PPS, 4 RTK fixed, 5 RTK float are fixes;
# 0 invalid, 6 dead reckoning, 7 manual input and 8 simulation are not a measured position.
FIX_QUALITIES = frozenset({1, 2, 3, 4, 5})
# RMC field 12 (NMEA 0183 v2.3 on): A autonomous, D differential, F/R RTK float/fixed,
# P precise; E estimated, M manual, S simulator and N not valid are no fix.
_RMC_FIX_MODES = frozenset("ADFRP")
# 1e-7 degree is about 1 cm: finer than the 4-5 decimals of minutes receivers send.
RESOLUTION = Decimal("0.0000001")
_LAT = re.compile(r"([0-9]{2})([0-9]{2}(?:\.[0-9]+)?)", re.ASCII)
_LON = re.compile(r"([0-9]{3})([0-9]{2}(?:\.[0-9]+)?)", re.ASCII)
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")


def utc_now() -> datetime:
    return datetime.now(UTC)


class NmeaFramer:
    """Bytes to sentence lines (`$...*hh`), resynchronising after garbage and binary noise."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.discarded_bytes = 0

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        out: list[str] = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            sentence = self._sentence(line)
            if sentence is not None:
                out.append(sentence)
        if len(self._buffer) > MAX_SENTENCE:
            # No line end in sight: keep only what may still become a sentence.
            start = self._buffer.rfind(b"$")
            keep = start if start >= 0 and len(self._buffer) - start <= MAX_SENTENCE else None
            cut = len(self._buffer) if keep is None else keep
            self.discarded_bytes += cut
            del self._buffer[:cut]
        return out

    def _sentence(self, line: bytes) -> str | None:
        # '$' is reserved as the start delimiter (NMEA 0183 §6.1.4), so the last one begins
        # the sentence and whatever stands before it is noise.
        start = line.rfind(b"$")
        sentence = line[start:].rstrip(b"\r") if start >= 0 else b""
        if not sentence or len(sentence) > MAX_SENTENCE or not _PRINTABLE.fullmatch(sentence):
            self.discarded_bytes += len(line) + 1
            return None
        self.discarded_bytes += start
        return sentence.decode("ascii")


@dataclass(frozen=True, slots=True)
class Observation:
    """What one GGA or RMC sentence says: a position, or (location None) that there is none."""

    location: Location | None
    quality: int | None = None  # GGA only
    satellites: int | None = None  # GGA only
    hdop: Decimal | None = None  # GGA only


def _degrees(text: str, direction: str, pattern: re.Pattern[str], hemispheres: str) -> Decimal:
    match = pattern.fullmatch(text)
    if match is None or direction not in hemispheres:
        raise FrameError(f"not a coordinate: {text[:20]!r} {direction[:2]!r}")
    minutes = Decimal(match[2])
    if minutes >= 60:
        raise FrameError(f"{minutes} minutes of arc")
    value = (Decimal(match[1]) + minutes / 60).quantize(RESOLUTION)
    return -value if direction == hemispheres[1] else value


def _fix_time(stamp: object, day: object, now: datetime) -> datetime | None:
    """The UTC instant of a fix; GGA gives no date, so the day nearest to `now` is taken."""
    if not isinstance(stamp, time_of_day):
        return None
    stamp = stamp.replace(tzinfo=UTC)
    if isinstance(day, date):
        return datetime.combine(day, stamp)
    today = datetime.combine(now.astimezone(UTC).date(), stamp)
    candidates = (today - timedelta(days=1), today, today + timedelta(days=1))
    return min(candidates, key=lambda t: abs(t - now))


def _number(text: object) -> Decimal | None:
    try:
        return Decimal(str(text)) if text not in (None, "") else None
    except ArithmeticError:
        return None


def interpret(sentence: str, now: datetime) -> Observation | None:
    """What a sentence says of the position; None for types that say nothing of it (GSV, VTG,
    proprietary ones). ChecksumError for a missing or wrong checksum (NMEA 0183 §6.1.7: a
    receiver always sends one), another DecodeError for a sentence that cannot be read."""
    try:
        message = pynmea2.parse(sentence, check=True)
    except pynmea2.ChecksumError as error:
        raise ChecksumError(f"NMEA checksum: {error.args[0]}") from None
    except pynmea2.SentenceTypeError:
        return None
    except (pynmea2.ParseError, ValueError, TypeError, AttributeError) as error:
        raise FrameError(f"not an NMEA sentence: {error}") from None
    try:
        if isinstance(message, pynmea2.GGA):
            quality = message.gps_qual if isinstance(message.gps_qual, int) else None
            satellites = _number(message.num_sats)
            extra: tuple[int | None, int | None, Decimal | None] = (
                quality,
                int(satellites) if satellites is not None else None,
                _number(message.horizontal_dil),
            )
            if quality not in FIX_QUALITIES or not message.lat:
                return Observation(None, *extra)
            day: object = None
        elif isinstance(message, pynmea2.RMC):
            mode = message.mode_indicator or ""
            extra = (None, None, None)
            if message.status != "A" or not message.lat or (mode and mode not in _RMC_FIX_MODES):
                return Observation(None)
            day = message.datestamp
        else:
            return None
        lat = _degrees(message.lat, message.lat_dir, _LAT, "NS")
        lon = _degrees(message.lon, message.lon_dir, _LON, "EW")
        return Observation(Location(lat, lon, _fix_time(message.timestamp, day, now)), *extra)
    except (ValueError, TypeError, AttributeError, ArithmeticError) as error:
        raise FrameError(f"unreadable {message.sentence_type} sentence: {error}") from None


@dataclass(frozen=True, slots=True)
class GpsStatus:
    """The receiver as the drive-by view shows it. `location` is None without a fresh fix."""

    device: str
    connected: bool
    location: Location | None
    satellites: int | None
    fix_age_s: float | None  # since the last fix arrived, on the host's clock
    sentences: int
    fixes: int
    no_fix: int
    bad_checksums: int
    unreadable: int
    discarded_bytes: int
    reconnects: int
    last_error: str | None

    @property
    def state(self) -> str:
        if self.location is not None:
            return "fix"
        return "no fix" if self.connected else "no device"


class GpsState:
    """The latest fix and the counters of one receiver; `now` is the host's monotonic time."""

    def __init__(
        self, *, stale_after_s: float = 5.0, clock: Callable[[], datetime] = utc_now
    ) -> None:
        if stale_after_s <= 0:
            raise ValueError("a fix goes stale after a positive number of seconds")
        self.stale_after_s = stale_after_s
        self.clock = clock
        self.framer = NmeaFramer()
        self.sentences = self.fixes = self.no_fix = self.bad_checksums = self.unreadable = 0
        self.satellites: int | None = None
        self._fix: Location | None = None
        self._fix_received = 0.0

    def reset_line(self) -> None:
        """Forget a sentence cut short by a lost connection."""
        discarded = self.framer.discarded_bytes
        self.framer = NmeaFramer()
        self.framer.discarded_bytes = discarded

    def feed(self, data: bytes, now: float) -> None:
        for sentence in self.framer.feed(data):
            self.handle(sentence, now)

    def handle(self, sentence: str, now: float) -> None:
        self.sentences += 1
        try:
            observation = interpret(sentence, self.clock())
        except ChecksumError:
            self.bad_checksums += 1
            return
        except DecodeError:
            self.unreadable += 1
            return
        if observation is None:
            return
        if observation.satellites is not None:
            self.satellites = observation.satellites
        if observation.location is None:
            self.no_fix += 1
            self._fix = None
            return
        self.fixes += 1
        self._fix = observation.location
        self._fix_received = now

    def location(self, now: float) -> Location | None:
        if self._fix is None or now - self._fix_received > self.stale_after_s:
            return None
        return self._fix

    def fix_age(self, now: float) -> float | None:
        return None if self._fix is None else now - self._fix_received


class GpsReader:
    """A receiver read on a thread: start(), then location() from any thread, then stop()."""

    def __init__(
        self,
        url: str,
        *,
        baudrate: int = 9600,
        stale_after_s: float = 5.0,
        backoff: Backoff | None = None,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        read_slice_s: float = 0.1,
    ) -> None:
        self.url = url
        self.backoff = backoff or Backoff(initial_s=0.2, factor=2.0, maximum_s=5.0)
        self.monotonic = monotonic
        self.read_slice_s = read_slice_s
        # u-blox and SiRF receivers default to 9600 baud; NMEA 0183 itself says 4800.
        self._port = SerialPort(url, baudrate=baudrate, parity="N", poll_s=0.02)
        self._state = GpsState(stale_after_s=stale_after_s, clock=clock)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="GpsReader", daemon=True)
        self._connected = False
        self._reconnects = 0
        self._last_error: str | None = None

    def start(self) -> GpsReader:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        self._port.close()

    def __enter__(self) -> GpsReader:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def location(self) -> Location | None:
        """The position to attach to a reading received now, or None."""
        with self._lock:
            return self._state.location(self.monotonic())

    def status(self) -> GpsStatus:
        now = self.monotonic()
        with self._lock:
            state = self._state
            return GpsStatus(
                device=self.url,
                connected=self._connected,
                location=state.location(now),
                satellites=state.satellites,
                fix_age_s=state.fix_age(now),
                sentences=state.sentences,
                fixes=state.fixes,
                no_fix=state.no_fix,
                bad_checksums=state.bad_checksums,
                unreadable=state.unreadable,
                discarded_bytes=state.framer.discarded_bytes,
                reconnects=self._reconnects,
                last_error=self._last_error,
            )

    def _run(self) -> None:
        delays = self.backoff.delays()
        failed = False
        while not self._stop.is_set():
            try:
                if not self._port.is_open:
                    self._port.open()
                    with self._lock:
                        self._state.reset_line()
                        self._connected = True
                        if failed:
                            self._reconnects += 1
                    delays = self.backoff.delays()
                data = self._port.read(time.monotonic() + self.read_slice_s)
            except TransportError as error:
                self._port.close()
                with self._lock:
                    self._connected = False
                    self._last_error = str(error)
                failed = True
                self._stop.wait(next(delays))
                continue
            if data:
                with self._lock:
                    self._state.feed(data, self.monotonic())
