"""Backfill files: JSONL or CSV (optionally gzipped) read as native event dicts, line by line.

Reading is split in two so that validation can run in worker processes:

* a :class:`Source` (in the importing process) cuts the file into chunks of raw lines, each raw
  line tagged with its line number;
* a decoder (small, picklable, shipped with every chunk) turns one raw line into the native event
  dict that ``POST /v1/events`` would take, or into a :class:`LineError`.

JSONL: one native event per line, exactly as posted to the API. CSV: a header row, then one event
per row; each column goes to the field its ``--map TARGET=COLUMN`` names, or else to the field
named by its header (``customer_id``, ``properties.total``, …). A header that names no catalogue
field still lands in the envelope's ``context.extra``: columns are never silently dropped. Empty
cells are missing values, not empty strings. A target ending in ``:json`` decodes the cell as JSON
(``properties.items:json=Items``) for lists and objects.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import orjson

from shared.errors import CicloError

Format = Literal["jsonl", "csv"]

# Raw lines per chunk: large enough that shipping a chunk to a worker costs little next to
# validating it, small enough that the progress bar moves and a --strict abort comes early.
CHUNK_LINES = 2_000

_JSON_SUFFIX = ":json"
_BOM = b"\xef\xbb\xbf"
# A plain (unescaped) occurred_at string; anything fancier is "cannot tell" for the order scan.
_OCCURRED_AT = re.compile(rb'"occurred_at"\s*:\s*"([^"\\]*)"')


class SourceError(CicloError):
    """The file cannot be read as asked: unknown format, no header, a mapped column missing."""


@dataclass(frozen=True, slots=True)
class LineError:
    """Why one line was rejected: its 1-based line number, the field (a JSON path, ``$`` for the
    whole line) and the problem."""

    line: int
    field: str
    message: str


class Decoder(Protocol):
    def decode(self, line: int, raw: Any) -> dict[str, Any] | LineError: ...

    def time_of(self, raw: Any) -> str | None:
        """The line's occurred_at text, read cheaply; None when that cannot be told for sure."""
        ...


Chunk = list[tuple[int, Any]]


@dataclass(frozen=True, slots=True)
class JsonlDecoder:
    default_type: str | None = None

    def decode(self, line: int, raw: Any) -> dict[str, Any] | LineError:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return LineError(line, "$", f"not valid JSON: {exc}")
        if not isinstance(data, dict):
            return LineError(line, "$", "expected a JSON object: one event per line")
        if self.default_type is not None and data.get("type") is None:
            data["type"] = self.default_type
        return data

    def time_of(self, raw: Any) -> str | None:
        # Exactly one occurrence, so it cannot be a nested field shadowing the top-level one (a
        # quote inside a JSON string is escaped and so never matches).
        line: bytes = raw
        if line.count(b'"occurred_at"') != 1:
            return None
        match = _OCCURRED_AT.search(line)
        return match.group(1).decode() if match else None


Target = tuple[tuple[str, ...], bool]
"""Where a column goes: the path of keys, and whether the cell holds JSON."""


@dataclass(frozen=True, slots=True)
class CsvDecoder:
    header: tuple[str, ...]
    targets: tuple[Target | None, ...]  # one per column; None: the column is skipped
    default_type: str | None = None
    time_column: int | None = None  # the column that goes to occurred_at

    def decode(self, line: int, raw: Any) -> dict[str, Any] | LineError:
        row: list[str] = raw
        if len(row) != len(self.header):
            return LineError(
                line, "$", f"expected {len(self.header)} columns as in the header, found {len(row)}"
            )
        data: dict[str, Any] = {}
        for cell, target in zip(row, self.targets, strict=True):
            if target is None or cell == "":
                continue
            path, as_json = target
            value: Any = cell
            if as_json:
                try:
                    value = orjson.loads(cell)
                except orjson.JSONDecodeError as exc:
                    return LineError(line, ".".join(path), f"not valid JSON: {exc}")
            node = data
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
        if self.default_type is not None and "type" not in data:
            data["type"] = self.default_type
        return data

    def time_of(self, raw: Any) -> str | None:
        row: list[str] = raw
        if self.time_column is None or len(row) != len(self.header):
            return None
        return row[self.time_column] or None


def parse_target(text: str) -> Target:
    """``properties.total`` → (("properties", "total"), False); ``…:json`` sets the flag."""
    as_json = text.endswith(_JSON_SUFFIX)
    path = tuple(text.removesuffix(_JSON_SUFFIX).split("."))
    if not all(part.strip() for part in path):
        raise SourceError(f"{text!r} is not a field path (e.g. properties.total)")
    return path, as_json


def parse_mapping(specs: Sequence[str]) -> dict[str, Target]:
    """``--map TARGET=COLUMN`` options → {column: target}."""
    mapping: dict[str, Target] = {}
    for spec in specs:
        target, sep, column = spec.partition("=")
        if not sep or not column:
            raise SourceError(
                f"--map {spec!r}: expected TARGET=COLUMN, e.g. customer_id=CustomerID"
            )
        if column in mapping:
            raise SourceError(f"--map: column {column!r} is mapped twice")
        mapping[column] = parse_target(target)
    return mapping


def plan_columns(header: Sequence[str], mapping: dict[str, Target]) -> tuple[Target | None, ...]:
    """The target of every column: its mapping, else its own header as a path."""
    missing = [column for column in mapping if column not in header]
    if missing:
        raise SourceError(
            f"--map names column(s) {', '.join(map(repr, missing))} not in the header; "
            f"the columns are: {', '.join(header)}"
        )
    targets: list[Target | None] = []
    for name in header:
        if name in mapping:
            targets.append(mapping[name])
        elif name.strip():
            # An unmapped column keeps its header as the field name, so nothing is dropped.
            parts = tuple(name.split("."))
            targets.append((parts if all(parts) else (name,), False))
        else:
            targets.append(None)  # an unnamed column (a trailing comma) has nowhere to go
    paths = [".".join(t[0]) for t in targets if t is not None]
    for path in paths:
        if paths.count(path) > 1:
            raise SourceError(f"two columns go to {path!r}; map one of them elsewhere")
        if any(other.startswith(path + ".") for other in paths):
            raise SourceError(f"{path!r} is both a value and a parent of other mapped fields")
    return tuple(targets)


def detect_format(path: Path) -> tuple[Format, str]:
    """The format and CSV delimiter a file name implies (``.gz`` is looked through)."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl", ","
    if suffix == ".csv":
        return "csv", ","
    if suffix == ".tsv":
        return "csv", "\t"
    raise SourceError(f"cannot tell the format of {path.name}: pass --format jsonl or csv")


class Source:
    """A file cut into chunks of raw lines, with the decoder for them.

    ``position`` is how far the file has been read, in bytes of the file as stored (compressed
    for ``.gz``), for the progress bar; ``size`` is its total.
    """

    def __init__(
        self,
        path: Path,
        *,
        fmt: Format,
        delimiter: str = ",",
        mapping: dict[str, Target] | None = None,
        default_type: str | None = None,
    ) -> None:
        if fmt == "jsonl" and mapping:
            raise SourceError("--map applies to CSV files; a JSONL line already names its fields")
        try:
            self.size = path.stat().st_size
            self._raw: BinaryIO = path.open("rb")
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
        self.path = path
        self.format: Format = fmt
        self._delimiter, self._mapping, self._default_type = delimiter, mapping, default_type
        self._stream: BinaryIO = self._raw
        self._text: io.TextIOWrapper | None = None
        if path.suffix.lower() == ".gz":
            self._stream = io.BufferedReader(gzip.GzipFile(fileobj=self._raw))
        self.decoder: Decoder
        self._rows: Iterator[tuple[int, Any]]
        try:
            if fmt == "jsonl":
                self.decoder = JsonlDecoder(default_type)
                self._rows = self._jsonl_lines()
            else:
                self._rows, self.decoder = self._csv_rows(delimiter, mapping or {}, default_type)
        except BaseException:
            self.close()
            raise

    @property
    def position(self) -> int:
        return self._raw.tell()

    def chunks(self, size: int = CHUNK_LINES) -> Iterator[Chunk]:
        chunk: Chunk = []
        try:
            for row in self._rows:
                chunk.append(row)
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
        except (OSError, EOFError, UnicodeDecodeError, csv.Error) as exc:
            raise SourceError(f"{self.path.name} is unreadable: {exc}") from exc
        if chunk:
            yield chunk

    def in_time_order(self, report: Callable[[int], None] | None = None) -> bool:
        """Whether the file is already in occurred_at order, judged by a cheap second read; then
        the import can publish while it validates instead of sorting first.

        Each line's time is read by :meth:`Decoder.time_of`, or else by decoding the line; a line
        that cannot be decoded, or has no occurred_at, will be rejected and so does not count. Any
        time this cannot read for sure (not an RFC 3339 string with a zone) answers False, which
        only costs the sort. ``report`` is told how many more bytes were read after each chunk.
        """
        with Source(
            self.path,
            fmt=self.format,
            delimiter=self._delimiter,
            mapping=self._mapping,
            default_type=self._default_type,
        ) as scan:
            last: datetime | None = None
            reported = 0
            for chunk in scan.chunks():
                if report is not None:
                    report(scan.position - reported)
                    reported = scan.position
                for line, raw in chunk:
                    text = scan.decoder.time_of(raw)
                    if text is None:
                        data = scan.decoder.decode(line, raw)
                        if isinstance(data, LineError) or data.get("occurred_at") is None:
                            continue
                        text = data["occurred_at"]
                        if not isinstance(text, str):
                            return False
                    try:
                        at = datetime.fromisoformat(text)
                    except ValueError:
                        return False
                    if at.tzinfo is None or (last is not None and at < last):
                        return False
                    last = at
        return True

    def close(self) -> None:
        # Outermost first: a wrapper left to the garbage collector would close (or flush into)
        # a file already closed under it.
        if self._text is not None:
            self._text.close()
        self._stream.close()
        self._raw.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _jsonl_lines(self) -> Iterator[tuple[int, bytes]]:
        for number, line in enumerate(self._stream, 1):
            if number == 1:
                line = line.removeprefix(_BOM)
            line = line.strip()
            if line:  # blank lines (a trailing newline, spacing) are not events
                yield number, line

    def _csv_rows(
        self, delimiter: str, mapping: dict[str, Target], default_type: str | None
    ) -> tuple[Iterator[tuple[int, list[str]]], CsvDecoder]:
        # utf-8-sig drops the byte-order mark spreadsheet programs put at the start.
        self._text = io.TextIOWrapper(self._stream, encoding="utf-8-sig", newline="")
        reader = csv.reader(self._text, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            raise SourceError(f"{self.path.name} is empty: a CSV needs a header row") from None
        except (UnicodeDecodeError, csv.Error) as exc:
            raise SourceError(f"{self.path.name} is unreadable: {exc}") from exc
        header = [name.strip() for name in header]
        targets = plan_columns(header, mapping)
        time_column = next(
            (i for i, target in enumerate(targets) if target == (("occurred_at",), False)), None
        )
        decoder = CsvDecoder(tuple(header), targets, default_type, time_column)

        def rows() -> Iterator[tuple[int, list[str]]]:
            start = reader.line_num + 1
            for row in reader:
                # A quoted cell may span lines; the row is reported at the line it starts on.
                if any(row):
                    yield start, row
                start = reader.line_num + 1

        return rows(), decoder
