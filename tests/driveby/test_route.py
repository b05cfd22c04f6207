"""The route list CSV: what an office exports, and what it gets wrong."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from gateway.driveby.route import (
    Route,
    RouteEntry,
    RouteError,
    format_route,
    load_route,
    parse_route,
)
from metergate.errors import ConfigError

GOOD = """\
meter_id,street,house,premise,note,lat,lon
KAM-12345678,Brīvības iela,12,dz. 3,key at the neighbour,56.958638,24.121825
kam-12345679,Brīvības iela,12,dz. 4,,56.958638,24.121825
DME-00000042,Tērbatas iela,5,,,,
"""


def test_a_route_in_file_order_with_canonical_ids() -> None:
    route = parse_route(GOOD.replace("24.121825\n", "24.121825,,\n"), path="r.csv")
    assert [e.meter_id for e in route] == ["KAM-12345678", "KAM-12345679", "DME-00000042"]
    first = route.entries[0]
    assert first == RouteEntry(
        "KAM-12345678",
        "Brīvības iela",
        "12",
        "dz. 3",
        "key at the neighbour",
        Decimal("56.958638"),
        Decimal("24.121825"),
        line=2,
    )
    assert first.address == "Brīvības iela 12, dz. 3"
    assert route.entries[2].lat is None and route.entries[2].line == 4
    assert route.streets() == ("Brīvības iela", "Tērbatas iela")
    assert "KAM-12345679" in route and route.get("kam-12345679") is None
    assert route.path == "r.csv" and route.ignored_columns == ()


def test_headers_are_case_insensitive_with_aliases_and_extra_columns_listed() -> None:
    text = (
        "Meter ID,STREET,House No,Apartment,Customer Note,Latitude,Longitude,Last reading\n"
        "KAM-12345678,Brīvības iela,12,dz. 3,n,56.9,24.1,123\n"
    )
    route = parse_route(text)
    entry = route.entries[0]
    assert (entry.house, entry.premise, entry.note) == ("12", "dz. 3", "n")
    assert (entry.lat, entry.lon) == (Decimal("56.9"), Decimal("24.1"))
    assert route.ignored_columns == ("Last reading",)


def test_manufacturer_and_serial_with_the_leading_zeros_a_spreadsheet_dropped() -> None:
    text = "manufacturer,serial,street\nkam,42,A\nDME,1234567,A\nSEN,00000099,A\n"
    route = parse_route(text)
    assert [e.meter_id for e in route] == ["KAM-00000042", "DME-01234567", "SEN-00000099"]


def test_meter_id_and_serial_must_agree_when_both_are_given() -> None:
    text = "meter_id,manufacturer,serial,street\nKAM-00000042,KAM,42,A\nKAM-00000043,KAM,42,A\n"
    with pytest.raises(RouteError) as caught:
        parse_route(text, path="r.csv")
    assert caught.value.problems == (
        (3, "meter_id KAM-00000043 and manufacturer/serial KAM-00000042 disagree"),
    )


def test_semicolons_and_decimal_commas_as_a_latvian_spreadsheet_writes_them() -> None:
    text = "meter_id;street;house;lat;lon\r\nKAM-12345678;Brīvības iela;12;56,958638;24,121825\r\n"
    entry = parse_route(text).entries[0]
    assert (entry.lat, entry.lon) == (Decimal("56.958638"), Decimal("24.121825"))


def test_quoted_fields_and_blank_lines_keep_line_numbers_right() -> None:
    text = (
        "meter_id,street,note\n"
        '\nKAM-12345678,"Brīvības iela","two\nlines, and a comma"\n'
        "\n"
        "bad,Brīvības iela,\n"
    )
    with pytest.raises(RouteError) as caught:
        parse_route(text, path="r.csv")
    assert caught.value.problems == ((6, "not a meter id (MFR-12345678): 'bad'"),)
    route = parse_route(text.replace("bad", "KAM-12345679"))
    assert [e.line for e in route] == [3, 6]
    assert route.entries[0].note == "two\nlines, and a comma"


def test_one_bad_row_refuses_the_route_and_every_bad_row_is_named() -> None:
    text = (
        "meter_id,street,house,lat,lon\n"
        "KAM-12345678,A,1,,\n"
        "KAM-1234,A,2,,\n"  # line 3: too short
        "KAM-12345679,,3,,\n"  # line 4: no street
        "KAM-12345678,B,4,,\n"  # line 5: duplicate of line 2
        "KAM-12345680,A,5,56.9,\n"  # line 6: lat without lon
        "KAM-12345681,A,6,91,24\n"  # line 7: out of range
        "KAM-12345682,A,7,north,24\n"  # line 8: not a number
        "KAM-12345683,A,8,56,24,extra\n"  # line 9: too many fields
        ",A,9,,\n"  # line 10: no meter id
    )
    with pytest.raises(RouteError) as caught:
        parse_route(text, path="/routes/r.csv")
    error = caught.value
    assert isinstance(error, ConfigError)
    assert [line for line, _ in error.problems] == [3, 4, 5, 6, 7, 8, 9, 10]
    assert error.path == "/routes/r.csv" and error.location == "line 3"
    text_of = dict(error.problems)
    assert text_of[5] == "KAM-12345678 is already on line 2"
    assert text_of[4] == "KAM-12345679 has no street"
    assert text_of[6] == "give both lat and lon, or neither"
    assert "not within -90..90" in text_of[7]
    assert "lat is not a number" in text_of[8]
    assert text_of[9] == "6 fields, but the header names 5"
    assert text_of[10] == "no meter id"
    assert str(error).startswith("/routes/r.csv:line 3: 8 bad rows: line 3: not a meter id")


def test_a_long_list_of_bad_rows_is_cut_in_the_message_but_kept_whole() -> None:
    text = "meter_id,street\n" + "x,A\n" * 25
    with pytest.raises(RouteError) as caught:
        parse_route(text)
    assert len(caught.value.problems) == 25
    assert str(caught.value).endswith("and 15 more")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("meter_id,street\n", "the route lists no meters"),
        ("meter_id,street\n\n\n", "the route lists no meters"),
        ("street,house\nA,1\n", "needs a meter_id column, or manufacturer and serial"),
        ("manufacturer,street\nKAM,A\n", "needs a meter_id column, or manufacturer and serial"),
        ("meter_id,house\nKAM-12345678,1\n", "needs a street column"),
        ("meter_id,street,lat\nKAM-12345678,A,5\n", "lat and lon come together"),
        ("meter_id,street,premise,flat\nKAM-12345678,A,1,2\n", "columns 3 and 4 both give"),
        ('meter_id,street\nKAM-12345678,"A"x\n', "not CSV"),
        ('meter_id,street\nKAM-12345678,"A\nKAM-12345679,B\n', "not CSV"),
    ],
)
def test_files_that_are_no_route(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_route(text, path="r.csv")
    assert caught.value.path == "r.csv"


def test_bad_manufacturer_and_serial_texts() -> None:
    text = "manufacturer,serial,street\nK1M,42,A\nKAM,123456789,A\nKAM,,A\n"
    with pytest.raises(RouteError) as caught:
        parse_route(text)
    assert [m for _, m in caught.value.problems] == [
        "a manufacturer is 3 letters, not 'K1M'",
        "a serial is up to 8 digits, not '123456789'",
        "a serial is up to 8 digits, not ''",
    ]


def test_a_file_with_a_byte_order_mark_and_files_that_cannot_be_read(tmp_path: Path) -> None:
    path = tmp_path / "route.csv"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    assert len(load_route(path)) == 3
    path.write_bytes("meter_id,street\nKAM-12345678,Tērbatas\n".encode("cp1257"))
    with pytest.raises(ConfigError, match="not UTF-8") as caught:
        load_route(path)
    assert caught.value.path == str(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_route(tmp_path / "absent.csv")
    with pytest.raises(ConfigError, match="cannot read"):
        load_route(tmp_path)


def test_written_routes_read_back_the_same() -> None:
    route = parse_route(GOOD)
    assert parse_route(format_route(route)).entries == route.entries


def test_a_route_refuses_a_meter_twice() -> None:
    entry = RouteEntry("KAM-12345678", "A")
    with pytest.raises(ValueError, match="twice"):
        Route((entry, entry))
