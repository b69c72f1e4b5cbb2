"""Writing the scan table as Parquet, CSV or JSON Lines (chosen by the file's extension), and
reading back a table written earlier (to resume)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from weightscope.errors import WeightscopeError
from weightscope.scan.columns import COLUMNS, FLOAT, INT, NAMES, TYPES

FORMATS = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}


def table_format(target: Path) -> str:
    """``parquet``, ``csv`` or ``jsonl``, from ``target``'s extension."""
    try:
        return FORMATS[target.suffix.lower()]
    except KeyError:
        raise WeightscopeError(
            f"{target}: unknown output format {target.suffix or '(no extension)'!r}; name the "
            "file .parquet, .csv or .jsonl"
        ) from None


def require_writer(target: Path) -> None:
    """Fail early, before any work, when the format needs a package that is missing."""
    if table_format(target) == "parquet":
        _pyarrow(target)


def write_table(rows: Sequence[dict[str, Any]], target: Path) -> None:
    """Write ``rows`` (complete rows, see :func:`weightscope.scan.columns.complete`) to
    ``target`` in the format its extension names."""
    kind = table_format(target)
    if kind == "parquet":
        pa, pq = _pyarrow(target)
        schema = pa.schema([(name, _arrow_type(pa, kind_)) for name, kind_, _ in COLUMNS])
        pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), target)
    elif kind == "csv":
        with open(target, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=NAMES)
            writer.writeheader()
            writer.writerows(rows)
    else:
        with open(target, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False, allow_nan=False))
                handle.write("\n")


def read_table(target: Path) -> list[dict[str, Any]]:
    """The rows of a table this module wrote. Raises ``ValueError`` (or ``OSError``) when the
    file is not such a table (another program's, an older layout)."""
    kind = table_format(target)
    if kind == "parquet":
        _, pq = _pyarrow(target)
        table = pq.ParquetFile(target).read()  # pq.read_table would import pandas (0.5 s)
        _check_columns(table.column_names)
        rows: list[dict[str, Any]] = table.to_pylist()
        return rows
    if kind == "csv":
        with open(target, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            _check_columns(reader.fieldnames or [])
            return [{name: _from_csv(name, row[name]) for name in NAMES} for row in reader]
    rows = []
    with open(target, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError("a line is not a JSON object")
                _check_columns(list(row))
                rows.append(row)
    return rows


def _check_columns(names: Sequence[str]) -> None:
    if list(names) != list(NAMES):
        raise ValueError("its columns are not those of this version's scan table")


def _from_csv(name: str, text: str) -> Any:
    if text == "" and name != "flags":
        return None
    kind = TYPES[name]
    if kind == INT:
        return int(text)
    if kind == FLOAT:
        return float(text)
    return text


def _arrow_type(pa: Any, kind: str) -> Any:
    return {INT: pa.int64(), FLOAT: pa.float64()}.get(kind, pa.string())


def _pyarrow(target: Path) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise WeightscopeError(
            f"{target}: writing Parquet needs pyarrow (pip install 'weightscope[scan]'), or "
            "name the output .csv or .jsonl"
        ) from None
    return pa, pq
