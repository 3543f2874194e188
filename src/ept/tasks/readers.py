"""Readers for the benchmarks' original file formats.

Each reader yields `Row`s: a record (dict with canonical keys, label still raw), or the problem
with that line, so the caller decides whether a bad row stops loading or is skipped and counted.
Line numbers are 1-based physical lines of the file. Whole-file problems (missing, empty,
undecodable) raise `DataError` at once.

Formats: GLUE tsv (tab-separated, no quoting: quotes are text), Yelp csv (quoted, RFC 4180),
SuperGLUE / WinoGrande / SciTail(snli_format) jsonl, MultiRC jsonl (one passage per line, expanded
to one row per answer option), MRQA 2019 jsonl (header line, one context per line, expanded to
one row per question), TextFooler "<label> <text>" lines, and the re-formatted WiC jsonl.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from ept.tasks.spec import DataError, LocalFile


@dataclass
class Row:
    line: int
    record: dict[str, Any] | None = None
    error: str | None = None     # what is wrong and what was expected
    note: str | None = None      # a deliberate repair, reported in TaskData.notes


def read_text(path: Path, display: str) -> str:
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{display}: file not found") from None
    except (OSError, EOFError) as err:
        raise DataError(f"{display}: cannot read ({err})") from None
    try:
        text = raw.decode("utf-8-sig")  # -sig: MRPC files start with a BOM
    except UnicodeDecodeError as err:
        raise DataError(f"{display}: not UTF-8 ({err})") from None
    if not text.strip():
        raise DataError(f"{display}: file is empty")
    return text


def _lines(text: str) -> Iterator[tuple[int, str]]:
    # split("\n"), not splitlines(): the latter also breaks on \x1c, \u2028, ... inside texts.
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if line.strip():
            yield number, line


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise KeyError(dotted)
        obj = obj[part]
    return obj


def _pick(obj: dict, keys: tuple[str, ...], f: LocalFile) -> dict[str, Any]:
    """Canonical record from a json object / header row, via the file's `fields` mapping."""
    mapping = dict(f.fields)
    return {k: _get(obj, mapping.get(k, k)) for k in keys}


def read_tsv(path: Path, f: LocalFile, keys: tuple[str, ...], display: str) -> Iterator[Row]:
    lines = list(_lines(read_text(path, display)))
    names = list(f.columns)
    if lines and f.skip_first_if and lines[0][1].strip() in f.skip_first_if:
        lines = lines[1:]
    if f.header and lines:
        if not names:
            names = lines[0][1].split("\t")
            missing = [col for key, col in ((k, dict(f.fields).get(k, k)) for k in keys) if col not in names]
            if missing:
                raise DataError(f"{display}, line {lines[0][0]}: header lacks column(s) {missing}; found {names}")
        lines = lines[1:]
    expected = f"{len(names)} tab-separated columns ({', '.join('unused' if n == '_' else n for n in names)})"
    for number, line in lines:
        cols = line.split("\t")
        note = None
        if len(cols) == len(names) - 1 and f.repair_missing_tab:
            m = re.match(r"^(.*\S)\s+(\S+)$", cols[-1])
            if m:  # "<question2> 0": the tab before the label is missing (qqp/new_dev.tsv line 1)
                cols = cols[:-1] + [m.group(1), m.group(2)]
                note = f"{display}, line {number}: missing tab before the label repaired"
        if len(cols) != len(names):
            yield Row(number, error=f"expected {expected}, got {len(cols)}")
            continue
        row = dict(zip(names, (c.strip() for c in cols)))
        if f.columns:
            yield Row(number, {k: row[k] for k in keys}, note=note)
        else:
            yield Row(number, _pick(row, keys, f), note=note)


def read_csv(path: Path, f: LocalFile, keys: tuple[str, ...], display: str) -> Iterator[Row]:
    text = read_text(path, display)
    reader = csv.reader(io.StringIO(text, newline=""))
    names = list(f.columns)
    previous_end = 0
    first = True
    try:
        for cols in reader:
            number, previous_end = previous_end + 1, reader.line_num
            if not cols or not any(c.strip() for c in cols):
                continue
            if first:
                first = False
                if (f.skip_first_if and ",".join(cols).strip() in f.skip_first_if) or f.header:
                    continue
            if len(cols) != len(names):
                expected = f"{len(names)} comma-separated columns ({', '.join(names)})"
                yield Row(number, error=f"expected {expected}, got {len(cols)}")
                continue
            row = dict(zip(names, cols))
            # Zhang et al. csv escape newlines and quotes inside reviews as \n and \"
            yield Row(number, {k: _unescape(row[k]) for k in keys})
    except csv.Error as err:
        yield Row(reader.line_num, error=f"broken csv quoting ({err})")


def _unescape(text: str) -> str:
    return text.replace("\\n", " ").replace('\\"', '"').strip()


def _json_lines(path: Path, display: str) -> Iterator[tuple[int, Any, str | None]]:
    for number, line in _lines(read_text(path, display)):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            yield number, None, f"broken JSON ({err.msg} at column {err.colno}); expected one JSON object per line"
            continue
        if not isinstance(obj, dict):
            yield number, None, f"expected a JSON object, got {type(obj).__name__}"
            continue
        yield number, obj, None


def read_jsonl(path: Path, f: LocalFile, keys: tuple[str, ...], display: str) -> Iterator[Row]:
    for number, obj, error in _json_lines(path, display):
        if error:
            yield Row(number, error=error)
            continue
        try:
            yield Row(number, _pick(obj, keys, f))
        except KeyError as err:
            yield Row(number, error=f"missing field {err.args[0]!r}; expected fields "
                      f"{[dict(f.fields).get(k, k) for k in keys]}")


def read_multirc(path: Path, f: LocalFile, keys: tuple[str, ...], display: str) -> Iterator[Row]:
    """SuperGLUE MultiRC: one passage per line -> one row per answer option, grouped by question."""
    for number, obj, error in _json_lines(path, display):
        if error:
            yield Row(number, error=error)
            continue
        try:
            passage = obj["passage"]
            for q in passage["questions"]:
                for a in q["answers"]:
                    yield Row(number, {"paragraph": passage["text"], "question": q["question"],
                                       "answer": a["text"], "group": f"{obj['idx']}-{q['idx']}",
                                       "label": a["label"]})
        except (KeyError, TypeError) as err:
            yield Row(number, error=f"missing field {err}; expected passage.text, passage.questions[]."
                      "question/idx/answers[].text/label")


def read_mrqa(path: Path, f: LocalFile, keys: tuple[str, ...], display: str) -> Iterator[Row]:
    """MRQA 2019: optional {"header": ...} line, then one context per line -> one row per question."""
    for number, obj, error in _json_lines(path, display):
        if error:
            yield Row(number, error=error)
            continue
        if "header" in obj:
            continue
        try:
            for qa in obj["qas"]:
                yield Row(number, {"question": qa["question"], "context": obj["context"],
                                   "id": qa.get("qid", qa.get("id", "")), "label": qa["answers"]})
        except (KeyError, TypeError) as err:
            yield Row(number, error=f"missing field {err}; expected context and qas[].question/answers")


def read_label_prefixed(path: Path, f: LocalFile, keys: tuple[str, ...], display: str) -> Iterator[Row]:
    """TextFooler "<label> <text>" lines; a text wrapped in quotes uses "" for a quote."""
    text_key = next(k for k in keys if k != "label")
    for number, line in _lines(read_text(path, display)):
        label, _, text = line.partition(" ")
        if not text.strip():
            yield Row(number, error='expected "<label> <text>" (label, one space, text)')
            continue
        text = text.strip()
        if len(text) > 1 and text[0] == text[-1] == '"':
            text = text[1:-1].replace('""', '"')
        yield Row(number, {text_key: _unescape(text), "label": label})


_WIC_MAPO = re.compile(r"^Word: (?P<word>.+?)\. Sentence 1: (?P<sentence1>.*) Sentence 2: (?P<sentence2>.*)$", re.S)


def read_wic_mapo(path: Path, f: LocalFile, keys: tuple[str, ...], display: str) -> Iterator[Row]:
    """Re-formatted WiC {"label", "text": "Word: W. Sentence 1: ... Sentence 2: ..."} -> fields."""
    for number, obj, error in _json_lines(path, display):
        if error:
            yield Row(number, error=error)
            continue
        m = _WIC_MAPO.match(str(obj.get("text", "")))
        if not m or "label" not in obj:
            yield Row(number, error='expected {"label": 0/1, "text": "Word: W. Sentence 1: ... Sentence 2: ..."}')
            continue
        yield Row(number, {**m.groupdict(), "label": obj["label"]})


def table_format(path: Path, f: LocalFile) -> str:
    """csv | tsv | jsonl | parquet: the file's `format`, else its suffix (".gz" looked through)."""
    from ept.tasks.spec import TABLE_FORMATS

    if f.format:
        return f.format
    suffix = Path(path.name.removesuffix(".gz")).suffix.lstrip(".").lower()
    suffix = {"json": "jsonl", "txt": "tsv", "pq": "parquet"}.get(suffix, suffix)
    if suffix not in TABLE_FORMATS:
        raise DataError(f"{f.path}: cannot tell the format from the suffix {path.suffix!r}; "
                        f"add format: one of {', '.join(TABLE_FORMATS)}")
    return suffix


def read_table(path: Path, f: LocalFile, keys: tuple[str, ...], display: str) -> Iterator[Row]:
    """A task file's own CSV / TSV / JSONL / Parquet (gzip allowed) through `datasets`' loaders.
    `f.fields` maps canonical keys to columns; a missing column names the columns present.
    Lines are 1-based data rows plus the header line (csv/tsv), as an editor shows them when no
    cell spans lines."""
    import datasets

    fmt = table_format(path, f)
    if not path.is_file():
        raise DataError(f"{display}: file not found")
    mapping = dict(f.fields)
    # Every csv/tsv cell is text and is kept as written: pandas would guess "007" -> 7, "1.50" -> 1.5,
    # "NA" -> NaN. Labels are left to pandas (numbers in a label column are label ids or targets).
    text = {mapping.get(key, key): str for key in keys if key != "label"}
    builder, kwargs = {"csv": ("csv", {"keep_default_na": False, "converters": text}),
                       "tsv": ("csv", {"sep": "\t", "keep_default_na": False, "converters": text}),
                       "jsonl": ("json", {}), "parquet": ("parquet", {})}[fmt]
    datasets.disable_progress_bars()
    try:
        rows = datasets.load_dataset(builder, data_files=str(path), split="train", **kwargs)
    except Exception as err:  # noqa: BLE001 - pandas/pyarrow parse errors: name the file
        raise DataError(f"{display}: cannot read as {fmt} ({' '.join(str(err).split())[:300]})") from None
    missing = {key: mapping.get(key, key) for key in keys if mapping.get(key, key) not in rows.column_names}
    if missing:
        wanted = ", ".join(f"{col!r} (for {key})" if col != key else repr(col) for key, col in missing.items())
        raise DataError(f"{display}: no column {wanted}; columns present: {', '.join(rows.column_names)}")
    offset = 2 if fmt in ("csv", "tsv") else 1  # the header line
    for i, row in enumerate(rows):
        yield Row(i + offset, {key: row[mapping.get(key, key)] for key in keys})


READ: dict[str, Callable[..., Iterator[Row]]] = {
    "tsv": read_tsv, "csv": read_csv, "jsonl": read_jsonl, "multirc": read_multirc,
    "mrqa": read_mrqa, "label_prefixed": read_label_prefixed, "wic_mapo": read_wic_mapo, "table": read_table,
}
