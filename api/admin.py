"""POST /v1/meters/import (CSV) and PUT /v1/meters/{id}/key: the registry and its secrets.

A key goes into `meter_keys` and never comes back: no route reads that table, answers say
only that the key was stored, and a rejected key is described without its text (the API's
database role needs INSERT and UPDATE on meter_keys and SELECT on its meter_id column only, for
the upsert; it is never granted SELECT on the key).

Storing a key also decodes the meter's frames that were stored before it was known
(ingest/recover.py add_key, the same as `metergate keys add`), so the role also needs SELECT and
UPDATE on raw_frames and INSERT on readings, meter_status and meters.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from api.auth import BODY_RESPONSES, METERS_ADMIN, ScopedRoute, scoped
from api.db import database_of, settings_of
from api.meter_import import MeterFileError, parse_meters_csv, upsert_meters_async
from api.models import ImportResult, KeyIn, RowError
from api.params import MeterIdPath, bad_input, meter_key
from ingest.recover import add_key
from ingest.store import DatabaseUnavailable
from metergate.keys import KEY_SIZE, canonical_meter_id

log = logging.getLogger(__name__)

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_BODY = ("body",)


def admin_router(max_import_bytes: int) -> APIRouter:
    router = APIRouter(prefix="/v1/meters", tags=["registry"], route_class=ScopedRoute)
    csv_body: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    }

    @router.post(
        "/import",
        summary="Load meters from a CSV file",
        response_model=ImportResult,
        max_body_size=max_import_bytes,
        **scoped(
            METERS_ADMIN,
            responses={
                **BODY_RESPONSES,
                413: {"description": f"larger than {max_import_bytes} bytes"},
                415: {"description": "not text/csv"},
                422: {"description": "the file as a whole cannot be read"},
            },
            openapi_extra=csv_body,
        ),
    )
    async def import_meters(request: Request) -> ImportResult:
        """The body is the CSV file (Content-Type: text/csv; api/meter_import.py lists the
        columns). Good rows are upserted; bad ones are listed with their line numbers."""
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "text/csv":
            raise HTTPException(415, "send the file as Content-Type: text/csv")
        raw = await request.body()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise bad_input(f"the file is not UTF-8 text (byte {exc.start})", _BODY) from None
        try:
            file = parse_meters_csv(text)
        except MeterFileError as exc:
            raise bad_input(str(exc), _BODY) from None
        async with database_of(request).connection() as conn, conn.transaction():
            inserted, updated = await upsert_meters_async(conn, file)
        return ImportResult(
            inserted=inserted,
            updated=updated,
            rejected=len(file.errors),
            errors=[RowError(line=e.line, message=e.message) for e in file.errors],
        )

    @router.put(
        "/{meter_id}/key",
        summary="Store a meter's AES-128 key (write-only)",
        status_code=204,
        response_class=Response,
        **scoped(METERS_ADMIN, responses={**BODY_RESPONSES, 404: {"description": "no such meter"}}),
    )
    async def put_key(
        request: Request, meter_id: Annotated[str, MeterIdPath], body: KeyIn
    ) -> Response:
        """Stores or replaces the key the ingest decrypts this meter's frames with, and decodes
        the meter's frames stored before it was known. Nothing ever returns the key."""
        key_text = body.key
        if not set(key_text) <= _HEX_DIGITS or len(key_text) != 2 * KEY_SIZE:
            # The message must not repeat the text: it may be most of a real key.
            raise bad_input("an AES-128 key is 32 hex digits", ("body", "key"))
        meter = meter_key(meter_id)
        if canonical_meter_id(meter) is None:
            raise bad_input(
                "a key belongs to a meter id of the form MFR-12345678", ("path", "meter_id")
            )
        async with database_of(request).connection() as conn:
            cur = await conn.execute("SELECT 1 FROM meters WHERE meter_id = %s", (meter,))
            if await cur.fetchone() is None:
                raise HTTPException(404, f"no meter {meter} in the registry")
        settings = settings_of(request)
        try:
            # Decoding is CPU and blocking database work: a worker thread, not the event loop.
            recovery = await run_in_threadpool(
                add_key, settings.database_url, meter, bytes.fromhex(key_text), zone=settings.zone
            )
        except DatabaseUnavailable:
            raise HTTPException(503, "the database cannot be reached; try again shortly") from None
        log.info(
            "key stored for %s: %d of %d stored frames decoded again",
            meter, recovery.decoded, recovery.stored,
        )  # fmt: skip
        return Response(status_code=204)

    return router
