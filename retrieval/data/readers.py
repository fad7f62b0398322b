"""Fast, strict readers for the delimited files the sources parse, with one-line errors.

Numeric tables go through pyarrow's multi-threaded CSV reader with fixed column types, so a 25M-row
ratings file is parsed in C++ without Python per row; every way a file can be wrong (absent, empty,
wrong separator or columns, non-numeric or missing values) becomes a RecError naming the file.
"""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from retrieval.core.errors import RecError

_TYPES = {"int": pa.int64(), "float": pa.float64()}


def download_hint(dataset: str) -> str:
    return (f"or run `python scripts/prepare_data.py --gin_file configs/{dataset}/data.gin "
            f"--run_dir runs/prepare-{dataset} --download`")


def require_files(folder: Path, names: list[str], dataset: str, cls: str,
                  downloadable: bool = True) -> None:
    """Fail with where-to-put-them when any of `names` is missing from `folder`."""
    missing = [n for n in names if not (folder / n).is_file()]
    if not missing:
        return
    how = download_hint(dataset) if downloadable else ""
    raise RecError(f"dataset {dataset!r}: {', '.join(missing)} not found in {folder}; put the "
                   f"{dataset} files there (set SEMID_DATA_ROOT or {cls}.path to another folder) {how}")


def read_bytes(path: Path) -> bytes:
    """Whole file as bytes; transparently gunzips `*.gz`."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError) as e:
        raise RecError(f"{path}: cannot read ({e}); the file is damaged, replace it") from None


def check_not_empty(path: Path, data: bytes | None = None) -> None:
    empty = (len(data.strip()) == 0) if data is not None else path.stat().st_size == 0
    if empty:
        raise RecError(f"{path}: the file is empty; replace it with the dataset's original file")


def first_line(path: Path) -> str:
    with open(path, "rb") as f:
        line = f.readline()
    return line.decode("utf-8", errors="replace").strip().lstrip("\ufeff")


def check_header(path: Path, required: list[str], delimiter: str = ",") -> list[str]:
    """The header's column names; a clear error when a required column is absent."""
    check_not_empty(path)
    header = first_line(path)
    names = [c.strip().strip('"') for c in header.split(delimiter)]
    missing = [c for c in required if c not in names]
    if missing:
        sep = {",": "comma", "\t": "tab", "|": "'|'"}.get(delimiter, repr(delimiter))
        raise RecError(f"{path}: expected {sep}-separated columns {','.join(required)} but the "
                       f"header is {header[:80]!r} (missing {', '.join(missing)}); "
                       "is this the right file, with the right separator?")
    return names


def _arrow_error(e: Exception, where: str, names: list[str]) -> RecError:
    msg = " ".join(str(e).split())
    m = re.search(r"column #(\d+)", msg)
    col = f" column {names[int(m.group(1))]!r}" if m and int(m.group(1)) < len(names) else ""
    bad = re.search(r"invalid value '([^']*)'", msg)
    if bad:
        return RecError(f"{where}{col}: non-numeric value {bad.group(1)!r}; ids, ratings and "
                        "timestamps must be numbers — is this the right file and separator?")
    return RecError(f"{where}: cannot parse ({msg}); check the separator and the number of columns")


def read_numeric(source: Path | bytes, columns: dict[str, str], *, where: str,
                 names: list[str] | None = None, delimiter: str = ",") -> dict[str, np.ndarray]:
    """Read `columns` ({name: "int" | "float"}) of a delimited file into numpy arrays.

    With `names`, the file has no header and `names` are its columns in order; otherwise the first
    line is the header. Only `columns` are converted (others are skipped, and not typed).
    """
    read_opts = pacsv.ReadOptions(column_names=names, block_size=1 << 24) if names else \
        pacsv.ReadOptions(block_size=1 << 24)
    conv = pacsv.ConvertOptions(column_types={c: _TYPES[t] for c, t in columns.items()},
                                include_columns=list(columns), strings_can_be_null=False)
    parse = pacsv.ParseOptions(delimiter=delimiter, quote_char=False if names else '"')
    in_memory = isinstance(source, (bytes, bytearray))
    src = pa.BufferReader(source) if in_memory else str(source)
    if names:
        header = names
    else:
        header = list(columns) if in_memory else check_header(Path(source), list(columns), delimiter)
    try:
        table = pacsv.read_csv(src, read_options=read_opts, parse_options=parse,
                               convert_options=conv)
    except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as e:
        raise _arrow_error(e, where, header) from None
    out = {}
    for c in columns:
        col = table.column(c)
        if col.null_count:
            raise RecError(f"{where}: column {c!r} has {col.null_count} empty value(s); "
                           "every row needs all of " + ",".join(columns))
        out[c] = col.to_numpy()
        table = table.drop_columns([c])   # free each Arrow column once it is copied out
    del table
    pa.default_memory_pool().release_unused()   # hand the parse buffers back to the OS now
    if len(next(iter(out.values()))) == 0:
        raise RecError(f"{where}: the file has no data rows; replace it with the dataset's original file")
    return out

