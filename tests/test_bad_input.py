"""Bad input: every error is an InputError whose message names the file and, where it
applies, the row and the feature; tolerated input is counted in the manifest figures.

Real files, real Beam runs (the in-process FnApiRunner), no mocks.
"""

import bz2
import gzip
import io
import json
import lzma
import random
import re
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

import prepro
from pipelines.analyze import run_analyze
from pipelines.errors import InputError
from pipelines import cli
from prepro.spec import spec_from_dict


# --- helpers -------------------------------------------------------------------------

def make_spec(**features):
    """make_spec(name={"source": ..., "layer": ..., ...}) -> Spec."""
    return spec_from_dict({"features": features})


def string_lookup(source, **extra):
    return {"source": source, "layer": "StringLookup", **extra}


def integer_lookup(source, **extra):
    return {"source": source, "layer": "IntegerLookup", **extra}


def text_vectorization(source="text", **extra):
    return {"source": source, "layer": "TextVectorization", **extra}


def write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def run(spec, inputs, fmt, output, **kwargs):
    """Runs the real job (no golden rows unless asked: they import TensorFlow) and
    returns the published manifest."""
    kwargs.setdefault("golden_rows", 0)
    return run_analyze(spec, [str(i) for i in inputs], fmt, str(output), **kwargs)


def analyze_error(spec, inputs, fmt, output, **kwargs) -> str:
    """Runs the job expecting an InputError; returns its message. Nothing is published."""
    with pytest.raises(InputError) as info:
        run(spec, inputs, fmt, output, **kwargs)
    assert not (Path(output) / "manifest.json").exists()
    return str(info.value)


def assert_names_file(message, path):
    assert str(path) in message, f"error does not name the file {path}: {message}"


def assert_names_row(message, row):
    assert re.search(rf"\brow {row}\b", message), f"error does not name row {row}: {message}"


def assert_names_feature(message, feature):
    assert f"'{feature}'" in message, f"error does not name feature {feature!r}: {message}"


def assert_error(message, path=None, row=None, feature=None, fragments=()):
    """The message names the file, row and feature where given, holds `fragments`,
    and is one printable line."""
    if path is not None:
        assert_names_file(message, path)
    if row is not None:
        assert_names_row(message, row)
    if feature is not None:
        assert_names_feature(message, feature)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message and message.encode("utf-8")


def figures(manifest, feature):
    return manifest["features"][feature]["figures"]


def file_rows(manifest):
    """{file name: rows read} from the manifest's provenance."""
    return {Path(i["path"]).name: i["rows"] for i in manifest["provenance"]["inputs"]}


# Every compression Beam reads, by the extension Beam detects it from. zstd frames carry
# a checksum, as the zstd tool writes them (without one, corrupt data can pass unseen).
COMPRESSIONS = {
    "gzip": (".gz", gzip.compress),
    "bzip2": (".bz2", bz2.compress),
    "zstd": (".zst", lambda data: zstandard.ZstdCompressor(write_checksum=True).compress(data)),
    "deflate": (".deflate", zlib.compress),  # Beam's DEFLATE: a zlib (RFC 1950) stream
    "lzma": (".xz", lzma.compress),
}


def _varint(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out += bytes([byte | 0x80])
        else:
            return out + bytes([byte])


def _field(number, payload):
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def tf_example(**features) -> bytes:
    """A serialized tf.train.Example, written by hand so these tests need no TensorFlow:
    tf_example(carrier=[b"AA"], fare=[1.5], flight=[7]) gives a bytes_list, float_list
    and int64_list (by the first value's type; ("float", []) for an empty list, None for
    a feature whose kind is not set)."""
    entries = b""
    for name, values in features.items():
        if isinstance(values, tuple):
            kind, values = values
        else:
            kind = None if values is None else type(values[0]).__name__
        if kind is None:
            feature = b""
        elif kind == "bytes":
            feature = _field(1, b"".join(_field(1, v) for v in values))               # bytes_list
        elif kind == "float":
            feature = _field(2, _field(1, struct.pack(f"<{len(values)}f", *values)))  # packed float_list
        else:
            feature = _field(3, _field(1, b"".join(_varint(v & (1 << 64) - 1) for v in values)))  # int64_list
        entries += _field(1, _field(1, name.encode()) + _field(2, feature))  # map<string, Feature> entry
    return _field(1, entries)                                                # Example.features


def example_bytes(name, value: bytes) -> bytes:
    return tf_example(**{name: [value]})


def tfrecord_bytes(records) -> bytes:
    from apache_beam.io.tfrecordio import _TFRecordUtil
    out = io.BytesIO()
    for record in records:
        _TFRecordUtil.write_record(out, record)
    return out.getvalue()


def write_tfrecord(path, records):
    return write(path, tfrecord_bytes(records))


def parquet_bytes(table) -> bytes:
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


# --- CSV -----------------------------------------------------------------------------

@pytest.mark.parametrize("body,bad_row", [
    ("carrier,flight\nAA,1\nUA,2\nDL,3,extra\nAA,4\n", 3),
    # A quoted value spanning lines must not shift the row number.
    ('carrier,flight\n"A\nA",1\nUA,2\nUA,7\nDL,3,extra\n', 4),
    # Blank lines are not rows (as in every other CSV error).
    ("carrier,flight\nAA,1\n\nUA,2\nDL,3,extra\n", 3),
])
def test_csv_row_with_too_many_columns_names_file_and_row(tmp_path, body, bad_row):
    path = write(tmp_path / "flights.csv", body)
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], "csv", tmp_path / "out")
    assert_names_file(message, path)
    assert_names_row(message, bad_row)
    assert re.search(r"expected 2 columns, got 3", message, re.IGNORECASE), message


def test_csv_missing_source_column(tmp_path):
    path = write(tmp_path / "flights.csv", "carrier,flight\nAA,1\n")
    spec = make_spec(airline=string_lookup("airline_code"))
    message = analyze_error(spec, [path], "csv", tmp_path / "out")
    assert_names_file(message, path)
    assert "airline_code" in message
    assert "missing" in message


def test_integer_lookup_non_integer_csv_value(tmp_path):
    path = write(tmp_path / "flights.csv", "carrier,flight\nAA,12\nUA,7\nDL,12x\nAA,5\n")
    spec = make_spec(flight_id=integer_lookup("flight"), carrier=string_lookup("carrier"))
    message = analyze_error(spec, [path], "csv", tmp_path / "out")
    assert_names_file(message, path)
    assert_names_row(message, 3)
    assert_names_feature(message, "flight_id")
    assert "12x" in message


def test_string_lookup_all_empty_csv_fields_is_the_empty_token(tmp_path):
    # With mask_token None, Keras's StringLookup learns "" like any other string.
    path = write(tmp_path / "flights.csv", "carrier,flight\n,1\n,2\n,3\n")
    manifest = run(make_spec(carrier=string_lookup("carrier")), [path], "csv", tmp_path / "out")
    figures = manifest["features"]["carrier"]["figures"]
    assert figures["rows"] == 3 and figures["values"] == 3 and figures["missing"] == 0
    assert figures["tokens_kept"] == 1
    assert prepro.load(str(tmp_path / "out")).vocabulary("carrier") == [""]


# --- matching and empty inputs ---------------------------------------------------------

def test_glob_matching_nothing(tmp_path):
    write(tmp_path / "flights.csv", "carrier\nAA\n")
    pattern = str(tmp_path / "nothing-*.csv")
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [pattern], "csv", tmp_path / "out")
    assert pattern in message
    assert "no input file matches" in message
    assert not (tmp_path / "out").exists()  # failed before touching the output


def test_one_of_several_patterns_matching_nothing(tmp_path):
    good = write(tmp_path / "flights.csv", "carrier\nAA\n")
    missing = str(tmp_path / "missing.csv")
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [good, missing], "csv",
                            tmp_path / "out")
    assert missing in message


@pytest.mark.parametrize("fmt,name,data,spec", [
    ("text", "empty.txt", b"", {"review": text_vectorization()}),
    ("jsonl", "empty.jsonl", b"", {"carrier": string_lookup("carrier")}),
    ("csv", "header-only.csv", b"carrier,flight\n", {"carrier": string_lookup("carrier")}),
])
def test_input_without_rows(tmp_path, fmt, name, data, spec):
    path = write(tmp_path / name, data)
    message = analyze_error(make_spec(**spec), [path], fmt, tmp_path / "out")
    assert "hold no rows" in message
    assert_names_file(message, path)


def test_zero_byte_csv_names_file(tmp_path):
    path = write(tmp_path / "empty.csv", b"")
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], "csv", tmp_path / "out")
    assert_names_file(message, path)
    assert "empty" in message.lower()


# --- JSON Lines ----------------------------------------------------------------------

def test_jsonl_line_that_is_not_json(tmp_path):
    path = write(tmp_path / "rows.jsonl", '{"carrier": "AA"}\n{"carrier": "UA"}\n{"carrier": \n{"carrier": "DL"}\n')
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], "jsonl", tmp_path / "out")
    assert_names_file(message, path)
    assert_names_row(message, 3)
    assert "JSON" in message


def test_jsonl_number_where_string_lookup_needs_strings(tmp_path):
    path = write(tmp_path / "rows.jsonl", '{"carrier": "AA"}\n{"carrier": "UA"}\n{"carrier": 17}\n')
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], "jsonl", tmp_path / "out")
    assert_names_file(message, path)
    assert_names_row(message, 3)
    assert "carrier" in message and "17" in message


def test_jsonl_nulls_are_missing_and_skipped(tmp_path):
    rows = [{"carrier": "AA"}, {"carrier": None}, {"other": 1}, {"carrier": "UA"},
            {"carrier": "AA"}, {"carrier": None}]
    path = write(tmp_path / "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    manifest = run(make_spec(carrier=string_lookup("carrier")), [path], "jsonl", tmp_path / "out")
    figures = manifest["features"]["carrier"]["figures"]
    assert figures["rows"] == 6
    assert figures["missing"] == 3  # two nulls and one absent key
    assert figures["values"] == 3
    assert prepro.load(str(tmp_path / "out")).vocabulary("carrier") == ["AA", "UA"]


# --- invalid UTF-8 -------------------------------------------------------------------

# Rows 2 and 4 are not UTF-8; "alpha" and "omega" occur only in them.
BAD_UTF8_TEXT = b"the plane left\nalpha \xff\xfe the\nthe plane landed\nomega \xc3 plane\nlate again\n"


def test_invalid_utf8_default_policy_errors(tmp_path):
    path = write(tmp_path / "reviews.txt", BAD_UTF8_TEXT)
    message = analyze_error(make_spec(review=text_vectorization()), [path], "text", tmp_path / "out")
    assert_names_file(message, path)
    assert_names_row(message, 2)
    assert_names_feature(message, "review")
    assert "UTF-8" in message
    assert "invalid_utf8" in message  # says how to accept it


def test_invalid_utf8_replace(tmp_path):
    path = write(tmp_path / "reviews.txt", BAD_UTF8_TEXT)
    spec = make_spec(review=text_vectorization(invalid_utf8="replace"))
    manifest = run(spec, [path], "text", tmp_path / "out")
    figures = manifest["features"]["review"]["figures"]
    assert figures["invalid_utf8_replaced"] == 2
    assert figures["invalid_utf8_skipped"] == 0
    assert figures["values"] == 5
    vocabulary = prepro.load(str(tmp_path / "out")).vocabulary("review")
    assert "alpha" in vocabulary and "omega" in vocabulary
    assert "\ufffd\ufffd" in vocabulary and "\ufffd" in vocabulary
    assert manifest["features"]["review"]["invalid_utf8"] == "replace"


def test_invalid_utf8_skip(tmp_path):
    path = write(tmp_path / "reviews.txt", BAD_UTF8_TEXT)
    spec = make_spec(review=text_vectorization(invalid_utf8="skip"))
    manifest = run(spec, [path], "text", tmp_path / "out")
    figures = manifest["features"]["review"]["figures"]
    assert figures["invalid_utf8_skipped"] == 2
    assert figures["invalid_utf8_replaced"] == 0
    assert figures["rows"] == 5 and figures["values"] == 3
    vocabulary = prepro.load(str(tmp_path / "out")).vocabulary("review")
    assert "alpha" not in vocabulary and "omega" not in vocabulary
    assert vocabulary[:2] == ["the", "plane"]


# --- TFRecord and Parquet ------------------------------------------------------------

def test_tfrecord_of_garbage_bytes(tmp_path):
    path = write(tmp_path / "data.tfrecord", random.Random(7).randbytes(300))
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], "tfrecord", tmp_path / "out")
    assert_names_file(message, path)
    assert "TFRecord" in message


def test_tfrecord_corrupt_after_good_records(tmp_path):
    path = write_tfrecord(tmp_path / "data.tfrecord",
                          [example_bytes("carrier", b"AA"), example_bytes("carrier", b"UA")])
    with open(path, "ab") as f:
        f.write(random.Random(3).randbytes(40))
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], "tfrecord", tmp_path / "out")
    assert_names_file(message, path)
    assert_names_row(message, 3)
    assert "TFRecord" in message


def test_tfrecord_good_records_are_read(tmp_path):
    # Checks the hand-written Example encoding the corrupt-file test relies on.
    path = write_tfrecord(tmp_path / "data.tfrecord",
                          [example_bytes("carrier", v) for v in (b"AA", b"UA", b"AA")])
    manifest = run(make_spec(carrier=string_lookup("carrier")), [path], "tfrecord", tmp_path / "out")
    assert manifest["provenance"]["rows_read"] == 3
    assert prepro.load(str(tmp_path / "out")).vocabulary("carrier") == ["AA", "UA"]


def test_parquet_int_column_for_string_lookup(tmp_path):
    path = tmp_path / "flights.parquet"
    pq.write_table(pa.table({"carrier_code": pa.array([None, 10, 20], pa.int64())}), path)
    spec = make_spec(carrier=string_lookup("carrier_code"))
    message = analyze_error(spec, [path], "parquet", tmp_path / "out")
    assert_names_file(message, path)
    assert_names_feature(message, "carrier")
    assert "carrier_code" in message
    assert "int64" in message


# --- compressed inputs (FileSystems.open(compression_type="auto")) --------------------

@pytest.mark.parametrize("fmt,name,body", [
    ("text", "rows.txt.gz", b"AA\nUA\nUA\n"),
    pytest.param("csv", "rows.csv.gz", b"carrier\nAA\nUA\nUA\n"),
    pytest.param("jsonl", "rows.jsonl.gz", b'{"carrier":"AA"}\n{"carrier":"UA"}\n{"carrier":"UA"}\n'),
])
def test_gzip_inputs_are_read(tmp_path, fmt, name, body):
    path = write(tmp_path / name, gzip.compress(body))
    source = "text" if fmt == "text" else "carrier"
    manifest = run(make_spec(carrier=string_lookup(source)), [path], fmt, tmp_path / "out")
    assert manifest["provenance"]["rows_read"] == 3
    assert prepro.load(str(tmp_path / "out")).vocabulary("carrier") == ["UA", "AA"]


# --- errors from worker processes ----------------------------------------------------

def test_error_from_worker_process_keeps_file_row_feature(tmp_path):
    path = write(tmp_path / "flights.csv", "flight\n1\n2\n3x\n")
    with pytest.raises(InputError) as info:
        run_analyze(make_spec(flight_id=integer_lookup("flight")), [str(path)], "csv", str(tmp_path / "out"),
                    pipeline_args=["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    message = str(info.value)
    assert_names_file(message, path)
    assert_names_row(message, 3)
    assert_names_feature(message, "flight_id")


# --- the CLI -------------------------------------------------------------------------

SPEC_YAML = """\
features:
  carrier:   {source: carrier, layer: StringLookup}
  flight_id: {source: flight,  layer: IntegerLookup}
"""


def run_cli(tmp_path, capsys, inputs, fmt="csv"):
    spec = write(tmp_path / "spec.yaml", SPEC_YAML)
    argv = ["analyze", "--spec", str(spec), "--format", fmt, "--output", str(tmp_path / "out")]
    for i in inputs:
        argv += ["--input", str(i)]
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err):
    """One error line, last, after nothing but prepro's progress lines (a job that
    started says what it reads)."""
    *progress, error = err.splitlines()
    assert error.startswith("prepro analyze: error: "), err
    assert err.endswith("\n") and all(line.startswith("prepro: ") and "error" not in line for line in progress), \
        f"not one error line: {err!r}"
    assert "Traceback" not in err


def test_cli_bad_value_is_one_line_error(tmp_path, capsys):
    path = write(tmp_path / "flights.csv", "carrier,flight\nAA,1\nUA,2x\n")
    code, out, err = run_cli(tmp_path, capsys, [path])
    assert code == 1
    assert out == ""
    assert_one_line_error(err)
    assert_names_file(err, path)
    assert_names_row(err, 2)
    assert_names_feature(err, "flight_id")


def test_cli_missing_column_is_one_line_error(tmp_path, capsys):
    path = write(tmp_path / "flights.csv", "carrier,flight_number\nAA,1\n")
    code, out, err = run_cli(tmp_path, capsys, [path])
    assert code == 1
    assert_one_line_error(err)
    assert_names_file(err, path)
    assert "'flight'" in err


def test_cli_unmatched_input_is_one_line_error(tmp_path, capsys):
    pattern = str(tmp_path / "none-*.csv")
    code, out, err = run_cli(tmp_path, capsys, [pattern])
    assert code == 1
    assert_one_line_error(err)
    assert pattern in err


def test_cli_success_returns_zero(tmp_path, capsys):
    path = write(tmp_path / "flights.csv", "carrier,flight\nAA,1\nUA,2\n")
    code, out, err = run_cli(tmp_path, capsys, [path])
    assert code == 0, err
    assert "2 rows, 0.0 MB from 1 file(s) in 1 read tasks" in out
    assert prepro.load(str(tmp_path / "out")).features == ["carrier", "flight_id"]


@pytest.mark.parametrize("batch_bytes", [64, 1 << 20])
def test_rows_are_counted_from_the_file_start_in_split_files(tmp_path, batch_bytes):
    # 400 lines of ~20 bytes: with 64-byte parts the bad line is in a late part.
    lines = [json.dumps({"carrier": f"C{i:04d}"}) for i in range(400)]
    lines[356] = '{"carrier": '
    path = write(tmp_path / "rows.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(InputError) as info:
        run_analyze(make_spec(carrier=string_lookup("carrier")), [str(path)], "jsonl",
                    str(tmp_path / "out"), batch_bytes=batch_bytes)
    assert_names_row(str(info.value), 357)
    text = write(tmp_path / "reviews.txt", b"good\n" * 300 + b"bad \xff\n" + b"good\n" * 10)
    with pytest.raises(InputError) as info:
        run_analyze(make_spec(review=text_vectorization()), [str(text)], "text", str(tmp_path / "out2"),
                    batch_bytes=batch_bytes)
    assert_names_row(str(info.value), 301)


def test_jsonl_column_absent_everywhere_names_the_feature(tmp_path):
    path = write(tmp_path / "rows.jsonl", '{"carrier": "AA"}\n{"carrier": "UA"}\n')
    spec = make_spec(carrier=string_lookup("carrier"), airline=string_lookup("airline_code"))
    message = analyze_error(spec, [path], "jsonl", tmp_path / "out")
    assert_names_feature(message, "airline")
    assert "no tokens to learn" in message and "0 values" in message
