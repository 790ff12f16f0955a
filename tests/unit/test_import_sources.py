"""Reading backfill files: JSONL lines and mapped CSV rows into native event dicts."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from services.ingest.import_sources import (
    CsvDecoder,
    JsonlDecoder,
    LineError,
    Source,
    SourceError,
    detect_format,
    parse_mapping,
    plan_columns,
)


def decoded(source: Source) -> list[dict[str, Any] | LineError]:
    return [source.decoder.decode(line, raw) for chunk in source.chunks() for line, raw in chunk]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- JSONL --------------------------------------------------------------------------------------


def test_jsonl_line_is_the_native_event() -> None:
    assert JsonlDecoder().decode(1, b'{"type": "signup", "customer_id": "c1"}') == {
        "type": "signup",
        "customer_id": "c1",
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"type": "signup",', "not valid JSON"),
        (b'[{"type": "signup"}]', "expected a JSON object"),
        (b'"signup"', "expected a JSON object"),
    ],
)
def test_jsonl_line_that_is_no_object_is_an_error_of_the_whole_line(
    raw: bytes, message: str
) -> None:
    error = JsonlDecoder().decode(7, raw)
    assert isinstance(error, LineError)
    assert (error.line, error.field) == (7, "$")
    assert message in error.message


def test_default_type_fills_lines_without_one_only() -> None:
    decoder = JsonlDecoder(default_type="order_completed")
    assert decoder.decode(1, b'{"customer_id": "c1"}') == {
        "customer_id": "c1",
        "type": "order_completed",
    }
    assert decoder.decode(2, b'{"type": "signup"}') == {"type": "signup"}


def test_jsonl_source_numbers_lines_as_an_editor_does(tmp_path: Path) -> None:
    path = write(
        tmp_path / "events.jsonl",
        '\ufeff{"type": "a", "n": 1}\n\n   \n{"type": "b", "n": 2}\r\nnot json\n',
    )
    with Source(path, fmt="jsonl") as source:
        chunks = list(source.chunks(size=2))
        assert [[line for line, _ in chunk] for chunk in chunks] == [[1, 4], [5]]
        assert source.position == source.size
    with Source(path, fmt="jsonl") as source:
        first, second, third = decoded(source)
    assert first == {"type": "a", "n": 1}  # the byte-order mark is not part of the JSON
    assert second == {"type": "b", "n": 2}
    assert isinstance(third, LineError)
    assert third.line == 5


def test_gzipped_jsonl_is_read_through(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"type": "signup", "customer_id": "c1"}\n' * 3))
    assert detect_format(path) == ("jsonl", ",")
    with Source(path, fmt="jsonl") as source:
        assert decoded(source) == [{"type": "signup", "customer_id": "c1"}] * 3


def test_a_mapping_for_jsonl_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "events.jsonl", "{}\n")
    with pytest.raises(SourceError, match="--map applies to CSV"):
        Source(path, fmt="jsonl", mapping=parse_mapping(["customer_id=Id"]))


# --- CSV ----------------------------------------------------------------------------------------


def test_csv_columns_go_where_the_mapping_says(tmp_path: Path) -> None:
    path = write(
        tmp_path / "orders.csv",
        "CustomerID,Event,Date,Amount,Email,Coupon\n"
        "c1,order_completed,2025-03-01T10:00:00Z,59.90,ana@example.com,\n",
    )
    mapping = parse_mapping(
        [
            "customer_id=CustomerID",
            "type=Event",
            "occurred_at=Date",
            "properties.total=Amount",
            "traits.email=Email",
        ]
    )
    with Source(path, fmt="csv", mapping=mapping) as source:
        [row] = decoded(source)
    assert row == {
        "customer_id": "c1",
        "type": "order_completed",
        "occurred_at": "2025-03-01T10:00:00Z",
        "properties": {"total": "59.90"},
        "traits": {"email": "ana@example.com"},
        # Coupon is unmapped: it keeps its header as its name (so it is not dropped), and its
        # empty cell is a missing value, not an empty string.
    }


def test_unmapped_headers_are_field_paths_and_type_may_be_constant(tmp_path: Path) -> None:
    path = write(
        tmp_path / "orders.csv",
        "customer_id,occurred_at,properties.total,properties.currency,Note\n"
        "c1,2025-03-01T10:00:00Z,10,EUR,gift\n",
    )
    with Source(path, fmt="csv", default_type="order_completed") as source:
        [row] = decoded(source)
    assert row == {
        "customer_id": "c1",
        "occurred_at": "2025-03-01T10:00:00Z",
        "properties": {"total": "10", "currency": "EUR"},
        "Note": "gift",
        "type": "order_completed",
    }


def test_json_target_decodes_the_cell(tmp_path: Path) -> None:
    path = write(
        tmp_path / "carts.csv",
        'cart,items\nk1,"[{""product_id"": ""p1"", ""price"": 5}]"\nk2,[oops\n',
    )
    mapping = parse_mapping(["properties.cart_id=cart", "properties.items:json=items"])
    with Source(path, fmt="csv", mapping=mapping) as source:
        good, bad = decoded(source)
    assert good == {"properties": {"cart_id": "k1", "items": [{"product_id": "p1", "price": 5}]}}
    assert isinstance(bad, LineError)
    assert (bad.line, bad.field) == (3, "properties.items")
    assert "not valid JSON" in bad.message


def test_csv_rows_are_numbered_by_the_line_they_start_on(tmp_path: Path) -> None:
    path = write(
        tmp_path / "notes.csv",
        '\ufeffcustomer_id,note\nc1,"two\nlines"\n\nc2,short\nc3\n',
    )
    with Source(path, fmt="csv") as source:
        rows = [row for chunk in source.chunks() for row in chunk]
        assert [line for line, _ in rows] == [2, 5, 6]
        assert source.decoder.decode(*rows[0]) == {"customer_id": "c1", "note": "two\nlines"}
        short = source.decoder.decode(*rows[2])
    assert short == LineError(6, "$", "expected 2 columns as in the header, found 1")


def test_tsv_uses_tabs(tmp_path: Path) -> None:
    path = write(tmp_path / "events.tsv", "customer_id\ttype\nc1\tsignup\n")
    fmt, delimiter = detect_format(path)
    with Source(path, fmt=fmt, delimiter=delimiter) as source:
        assert decoded(source) == [{"customer_id": "c1", "type": "signup"}]


def test_an_empty_csv_has_no_header(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="needs a header row"):
        Source(write(tmp_path / "empty.csv", ""), fmt="csv")


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["customer_id"], "expected TARGET=COLUMN"),
        (["customer_id="], "expected TARGET=COLUMN"),
        (["customer_id=A", "anonymous_id=A"], "mapped twice"),
        (["traits..email=A"], "not a field path"),
    ],
)
def test_malformed_mappings_are_refused(specs: list[str], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        parse_mapping(specs)


@pytest.mark.parametrize(
    ("header", "specs", "message"),
    [
        (["Id", "Mail"], ["customer_id=CustomerID"], "'CustomerID' not in the header; .*Id, Mail"),
        (["Id", "customer_id"], ["customer_id=Id"], "two columns go to 'customer_id'"),
        (["A", "B"], ["traits=A", "traits.email=B"], "'traits' is both a value and a parent"),
    ],
)
def test_mappings_that_do_not_fit_the_header_are_refused(
    header: list[str], specs: list[str], message: str
) -> None:
    with pytest.raises(SourceError, match=message):
        plan_columns(header, parse_mapping(specs))


def test_a_column_without_a_header_is_skipped() -> None:
    decoder = CsvDecoder(("customer_id", ""), plan_columns(["customer_id", ""], {}))
    assert decoder.decode(2, ["c1", "x"]) == {"customer_id": "c1"}


# --- formats and files --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jsonl", ("jsonl", ",")),
        ("a.NDJSON", ("jsonl", ",")),
        ("a.csv", ("csv", ",")),
        ("a.csv.gz", ("csv", ",")),
        ("a.tsv", ("csv", "\t")),
    ],
)
def test_format_follows_the_extension(name: str, expected: tuple[str, str]) -> None:
    assert detect_format(Path(name)) == expected


def test_an_unknown_extension_asks_for_format() -> None:
    with pytest.raises(SourceError, match="pass --format"):
        detect_format(Path("export.txt"))


def test_a_missing_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read"):
        Source(tmp_path / "nope.jsonl", fmt="jsonl")


# --- the order check ----------------------------------------------------------------------------


T10 = '{"occurred_at": "2025-01-01T10:00:00Z"}'


@pytest.mark.parametrize(
    ("lines", "in_order"),
    [
        ([T10, T10], True),
        # 09:30-01:00 is 10:30Z: the order is by instant, not by text
        ([T10, '{"occurred_at": "2025-01-01T09:30:00-01:00"}'], True),
        ([T10, '{"occurred_at": "2025-01-01T09:59:59Z"}'], False),
        # read by decoding the line: a nested field of that name, an escape in the value
        (
            [T10, '{"properties": {"occurred_at": "x"}, "occurred_at": "2025-01-01T11:00:00Z"}'],
            True,
        ),
        ([T10, '{"occurred_at": "2025-01-01T09:00:00\\u005a"}'], False),
        # lines that will be rejected anyway do not count
        ([T10, "not json", '{"type": "signup"}', T10], True),
        # a time it cannot read for sure: no promise
        ([T10, '{"occurred_at": "2025-01-01T11:00:00"}'], False),
        ([T10, '{"occurred_at": "last tuesday"}'], False),
        ([T10, '{"occurred_at": 1735732800}'], False),
    ],
)
def test_jsonl_order_check(tmp_path: Path, lines: list[str], in_order: bool) -> None:
    path = write(tmp_path / "events.jsonl", "\n".join(lines) + "\n")
    with Source(path, fmt="jsonl") as source:
        assert source.in_time_order() is in_order
        assert len(decoded(source)) == len(lines)  # the check reads a copy, not this source


def test_csv_order_check_reads_the_column_mapped_to_occurred_at(tmp_path: Path) -> None:
    path = write(
        tmp_path / "orders.csv",
        "Id,Date\n1,2025-01-01T10:00:00Z\n2,2025-01-02T10:00:00Z\n3,2025-01-01T11:00:00Z\n",
    )
    mapped = parse_mapping(["occurred_at=Date"])
    with Source(path, fmt="csv", mapping=mapped) as source:
        assert source.in_time_order() is False
    # A row without a date will be rejected, so it sets no order.
    write(path, "Id,Date\n1,2025-01-01T10:00:00Z\n2,\n3,2025-01-02T10:00:00Z\n")
    with Source(path, fmt="csv", mapping=mapped) as source:
        assert source.in_time_order() is True
