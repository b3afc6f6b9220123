"""Bad input, class by class and format by format, through the real job: encodings,
types, structure, emptiness, and each format's own failure modes.

Every outcome is asserted: an InputError whose one line names the feature (where one is
involved), the file and the row (where there is one), or a counted skip whose figures
are in the manifest. Policy: docs/artifact-format.md, "Input policy".
"""

import json
import math
import pathlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import prepro
from conftest import state_path
from test_bad_input import (analyze_error, assert_error, figures, file_rows, integer_lookup, make_spec,
                            parquet_bytes, run, string_lookup, text_vectorization, tf_example,
                            tfrecord_bytes, write)

EXT = {"text": "txt", "csv": "csv", "jsonl": "jsonl", "parquet": "parquet", "tfrecord": "tfrecord"}


def encode(fmt, rows, columns=None):
    """Rows ({column: value}; None is a missing value) as a file of `fmt`. Values are
    str, bytes (written as they are: may be invalid UTF-8), int or float."""
    columns = columns or list(rows[0])
    raw = [{c: r.get(c) for c in columns} for r in rows]
    as_bytes = lambda v: v if isinstance(v, bytes) else str(v).encode()  # noqa: E731
    if fmt == "text":
        return b"".join(as_bytes(r["text"]) + b"\n" for r in raw)
    if fmt == "csv":
        lines = [b",".join(c.encode() for c in columns)]
        lines += [b",".join(b"" if r[c] is None else as_bytes(r[c]) for c in columns) for r in raw]
        return b"\n".join(lines) + b"\n"
    if fmt == "jsonl":
        def value(v):
            return json.dumps(v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v)
        return b"".join(("{" + ", ".join(f'"{c}": {value(r[c])}' for c in columns if r[c] is not None)
                         + "}\n").encode("utf-8", "surrogateescape") for r in raw)
    if fmt == "parquet":
        return parquet_bytes(pa.table({c: [r[c] for r in raw] for c in columns}))
    return tfrecord_bytes([tf_example(**{c: [v.encode() if isinstance(v, str) else v]
                                         for c, v in r.items() if v is not None}) for r in raw])


def put(tmp_path, name, fmt, rows, columns=None):
    return write(tmp_path / f"{name}.{EXT[fmt]}", encode(fmt, rows, columns))


def _token_spec(fmt, **extra):
    source = "text" if fmt == "text" else "carrier"
    layer = text_vectorization(source, **extra) if fmt == "text" else string_lookup(source, **extra)
    return source, make_spec(carrier=layer)


def vocabulary(tmp_path, feature="carrier"):
    return prepro.load(str(tmp_path / "out")).vocabulary(feature)


# --- encodings ------------------------------------------------------------------------

ALL = ("text", "csv", "jsonl", "parquet", "tfrecord")


@pytest.mark.parametrize("fmt", ALL)
def test_invalid_utf8_value_is_an_error_by_default(tmp_path, fmt):
    source, spec = _token_spec(fmt)
    path = put(tmp_path, "rows", fmt, [{source: b"AA"}, {source: b"A\xffA"}, {source: b"UA"}])
    message = analyze_error(spec, [path], fmt, tmp_path / "out")
    assert_error(message, path, row=2, feature="carrier", fragments=["not valid UTF-8", "invalid_utf8"])


@pytest.mark.parametrize("policy", ["replace", "skip"])
@pytest.mark.parametrize("fmt", ALL)
def test_invalid_utf8_value_replace_or_skip_is_counted(tmp_path, fmt, policy):
    source, spec = _token_spec(fmt, invalid_utf8=policy)
    path = put(tmp_path, "rows", fmt, [{source: b"AA"}, {source: b"A\xffA"}, {source: b"AA"}])
    manifest = run(spec, [path], fmt, tmp_path / "out")
    counted = figures(manifest, "carrier")
    assert counted[f"invalid_utf8_{'replaced' if policy == 'replace' else 'skipped'}"] == 1
    expected = ["aa", "a\ufffda"] if fmt == "text" else ["AA", "A\ufffdA"]  # text is lower-cased
    assert vocabulary(tmp_path) == (expected if policy == "replace" else expected[:1])


@pytest.mark.parametrize("policy,outcome", [
    ("error", None), ("replace", ["AA", "\ufffd\ufffd\ufffd"]), ("skip", ["AA"])])
def test_jsonl_lone_surrogate_escape_follows_the_invalid_utf8_policy(tmp_path, policy, outcome):
    # json.loads accepts "\ud800"; it is not text UTF-8 can hold, so it is invalid UTF-8
    # (its bytes ED A0 80) for the feature's policy. Before: a raw UnicodeEncodeError.
    path = write(tmp_path / "rows.jsonl", '{"carrier": "AA"}\n{"carrier": "\\ud800"}\n{"carrier": "AA"}\n')
    spec = make_spec(carrier=string_lookup("carrier", invalid_utf8=policy))
    if outcome is None:
        message = analyze_error(spec, [path], "jsonl", tmp_path / "out")
        assert_error(message, path, row=2, feature="carrier", fragments=["lone UTF-16 surrogate"])
        return
    manifest = run(spec, [path], "jsonl", tmp_path / "out")
    assert figures(manifest, "carrier")[f"invalid_utf8_{policy}{'d' if policy == 'replace' else 'ped'}"] == 1
    assert vocabulary(tmp_path) == outcome


def test_jsonl_invalid_utf8_in_a_key_or_an_unread_value(tmp_path):
    # Only the values a feature reads are checked; a key that is not UTF-8 is a column
    # nobody reads.
    path = write(tmp_path / "rows.jsonl", b'{"carr\xffier": "x", "carrier": "AA", "other": "\xfe"}\n')
    manifest = run(make_spec(carrier=string_lookup("carrier")), [path], "jsonl", tmp_path / "out")
    assert figures(manifest, "carrier")["values"] == 1
    assert vocabulary(tmp_path) == ["AA"]


def test_csv_header_not_utf8(tmp_path):
    # A column the spec reads must be named in UTF-8; the others may be named anyhow.
    spec = make_spec(carrier=string_lookup("carrier"))
    ok = write(tmp_path / "ok.csv", b"carrier,fl\xffight\nAA,1\n")
    assert file_rows(run(spec, [ok], "csv", tmp_path / "out")) == {"ok.csv": 1}
    bad = write(tmp_path / "bad.csv", b"carr\xffier,flight\nAA,1\n")
    message = analyze_error(spec, [bad], "csv", tmp_path / "out2")
    assert_error(message, bad, feature="carrier", fragments=["missing column(s) ['carrier']", r"carr\udcffier"])


BINARY = bytes(range(256)) * 8


@pytest.mark.parametrize("fmt,row,fragment", [
    ("text", 2, "not valid UTF-8"),
    ("csv", None, "missing column(s) ['carrier']"),
    ("jsonl", 1, "not a JSON object"),
    ("parquet", None, "cannot read as parquet"),
    ("tfrecord", 1, "corrupt TFRecord"),
])
def test_binary_garbage_as_each_format(tmp_path, fmt, row, fragment):
    source, spec = _token_spec(fmt)
    path = write(tmp_path / f"garbage.{EXT[fmt]}", BINARY)
    message = analyze_error(spec, [path], fmt, tmp_path / "out")
    assert_error(message, path, row=row, fragments=[fragment])


# --- types ----------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,body", [
    ("csv", b"flight\n1\n2\n99999999999999999999\n"),
    ("jsonl", b'{"flight": 1}\n{"flight": 2}\n{"flight": 99999999999999999999}\n'),
    ("parquet", parquet_bytes(pa.table({"flight": pa.array([1, 2, 2 ** 64 - 1], pa.uint64())}))),
])
def test_int64_overflow_names_its_row(tmp_path, fmt, body):
    # Before: CSV named no row, JSON Lines the batch's first row, Parquet raised ArrowInvalid.
    path = write(tmp_path / f"rows.{EXT[fmt]}", body)
    message = analyze_error(make_spec(flight_id=integer_lookup("flight")), [path], fmt, tmp_path / "out")
    assert_error(message, path, row=3, feature="flight_id", fragments=["outside the int64 range"])


def test_int64_limits_are_values(tmp_path):
    path = write(tmp_path / "rows.csv", b"flight\n9223372036854775807\n-9223372036854775808\n")
    run(make_spec(flight_id=integer_lookup("flight")), [path], "csv", tmp_path / "out")
    assert sorted(vocabulary(tmp_path, "flight_id")) == [-2 ** 63, 2 ** 63 - 1]


def test_huge_numbers_for_numeric_features_are_infinite(tmp_path):
    # An integer beyond float64 parses to +-inf, as its text ("1e999") does in every format:
    # Discretization keeps it (counted), Normalization names its row.
    path = write(tmp_path / "rows.jsonl", '{"fare": 1}\n{"fare": 1' + "0" * 400 + '}\n{"fare": 2}\n')
    manifest = run(make_spec(fare={"source": "fare", "layer": "Discretization", "config": {"num_bins": 2}}),
                   [path], "jsonl", tmp_path / "out")
    assert figures(manifest, "fare")["infinite"] == 1
    message = analyze_error(make_spec(fare={"source": "fare", "layer": "Normalization"}), [path], "jsonl",
                            tmp_path / "out2")
    assert_error(message, path, row=2, feature="fare", fragments=["infinite"])


NORMALIZATION = {"source": "fare", "layer": "Normalization"}


@pytest.mark.parametrize("fmt,body,feature,row,fragment", [
    ("csv", b"fare\n1.5\nabc\n", NORMALIZATION, 2, "'abc' is not a number"),
    ("jsonl", b'{"fare": 1.5}\n{"fare": "1.5"}\n', NORMALIZATION, 2, "expected float values, found '1.5'"),
    ("jsonl", b'{"fare": 1.5}\n{"fare": true}\n', NORMALIZATION, 2, "expected float values, found True"),
    ("jsonl", b'{"flight": 1}\n{"flight": 1.5}\n', integer_lookup("flight"), 2, "expected int values"),
    ("jsonl", b'{"carrier": "AA"}\n{"carrier": false}\n', string_lookup("carrier"), 2, "expected string values"),
    ("parquet", parquet_bytes(pa.table({"fare": ["1.5", "abc"]})), NORMALIZATION, 2, "is not a number"),
    ("parquet", parquet_bytes(pa.table({"fare": [True, False]})), NORMALIZATION, 1, "holds booleans"),
    ("parquet", parquet_bytes(pa.table({"flight": [1.5, 2.0]})), integer_lookup("flight"), 1, "holds double"),
    ("parquet", parquet_bytes(pa.table({"carrier": pa.array([1, 2], pa.timestamp("s"))})),
     string_lookup("carrier"), 1, "holds timestamp[ms] values"),  # Parquet stores ms
    ("tfrecord", tfrecord_bytes([tf_example(fare=[1.5]), tf_example(fare=[b"1.5"])]), NORMALIZATION, 2,
     "holds a bytes_list here and a float_list in earlier rows"),
    ("tfrecord", tfrecord_bytes([tf_example(fare=[b"1.5"])]), NORMALIZATION, 1,
     "holds a bytes_list, expected float_list or int64_list"),
    ("tfrecord", tfrecord_bytes([tf_example(carrier=[1.5])]), string_lookup("carrier"), 1,
     "holds a float_list, expected bytes_list"),
], ids=["csv-text-for-number", "jsonl-string-for-number", "jsonl-bool-for-number", "jsonl-float-for-int",
        "jsonl-bool-for-string", "parquet-text-for-number", "parquet-bool-for-number", "parquet-double-for-int",
        "parquet-timestamp-for-string", "tfrecord-type-changes", "tfrecord-bytes-for-number",
        "tfrecord-float-for-string"])
def test_wrong_type_names_feature_file_row(tmp_path, fmt, body, feature, row, fragment):
    path = write(tmp_path / f"rows.{EXT[fmt]}", body)
    message = analyze_error(make_spec(f=feature), [path], fmt, tmp_path / "out")
    assert_error(message, path, row=row, feature="f")
    assert fragment.lower() in message.lower(), message


STRUCT = pa.struct([("a", pa.int64())])


@pytest.mark.parametrize("fmt,body,feature,fragment", [
    ("jsonl", b'{"carrier": "AA"}\n{"carrier": [["AA"]]}\n', string_lookup("carrier"), "found ['AA']"),
    ("jsonl", b'{"carrier": "AA"}\n{"carrier": {"a": 1}}\n', string_lookup("carrier"), "found {'a': 1}"),
    ("jsonl", b'{"fare": 1}\n{"fare": [1, 2]}\n', NORMALIZATION, "holds 2 values in this row"),
    ("jsonl", b'{"fare": 1}\n{"fare": [[1]]}\n', NORMALIZATION, "found [1]"),
    ("parquet", parquet_bytes(pa.table({"carrier": pa.array([None, {"a": 1}], STRUCT)})),
     string_lookup("carrier"), "holds struct<a: int64> values"),
    ("parquet", parquet_bytes(pa.table({"fare": pa.array([None, {"a": 1}], STRUCT)})),
     NORMALIZATION, "holds struct<a: int64> values"),
    ("parquet", parquet_bytes(pa.table({"carrier": pa.array([None, [("k", 1)]], pa.map_(pa.string(), pa.int64()))})),
     string_lookup("carrier"), "holds map<string, int64"),
    ("parquet", parquet_bytes(pa.table({"carrier": pa.array([None, [["a"]]])})),
     string_lookup("carrier"), "holds list<element: string> values"),
    ("parquet", parquet_bytes(pa.table({"flight": pa.array([None, [{"a": 1}]])})),
     integer_lookup("flight"), "holds struct<a: int64> values"),
], ids=["jsonl-nested-list", "jsonl-object", "jsonl-list-for-scalar-number", "jsonl-nested-number",
        "parquet-struct-string", "parquet-struct-number", "parquet-map", "parquet-list-of-lists",
        "parquet-list-of-structs"])
def test_nested_value_where_a_scalar_is_expected(tmp_path, fmt, body, feature, fragment):
    # Before: Parquet structs, maps and nested lists ended in ArrowNotImplementedError.
    path = write(tmp_path / f"rows.{EXT[fmt]}", body)
    message = analyze_error(make_spec(f=feature), [path], fmt, tmp_path / "out")
    assert_error(message, path, row=2, feature="f", fragments=[fragment])


LAYERS = {
    "StringLookup": ("carrier", string_lookup("carrier"), pa.array(["AA", "UA"])),
    "IntegerLookup": ("flight", integer_lookup("flight"), pa.array([1, 2])),
    "Normalization": ("fare", NORMALIZATION, pa.array([1.0, 2.0])),
    "Discretization": ("fare", {"source": "fare", "layer": "Discretization", "config": {"num_bins": 2}},
                       pa.array([1.0, 2.0])),
    "Hashing": ("carrier", {"source": "carrier", "layer": "Hashing", "config": {"num_bins": 4}},
                pa.array(["AA", "UA"])),
    "CategoryEncoding": ("flight", {"source": "flight", "layer": "CategoryEncoding",
                                    "config": {"num_tokens": 4}}, pa.array([1, 2])),
}


@pytest.mark.parametrize("layer", LAYERS)
def test_null_typed_parquet_column(tmp_path, layer):
    # A column Parquet stores as type null (every value missing): counted as missing,
    # and a feature that gets no value anywhere is an error naming it.
    column, feature, values = LAYERS[layer]
    good = write(tmp_path / "a.parquet", parquet_bytes(pa.table({column: values})))
    nulls = write(tmp_path / "b.parquet", parquet_bytes(pa.table({column: pa.nulls(3)})))
    manifest = run(make_spec(f=feature), [good, nulls], "parquet", tmp_path / "out")
    assert figures(manifest, "f")["missing"] == 3 and figures(manifest, "f")["values"] == 2
    message = analyze_error(make_spec(f=feature), [nulls], "parquet", tmp_path / "out2")
    assert_error(message, feature="f", fragments=["no ", "3 missing"])


def test_parquet_dictionary_decimal_and_half_float_columns_are_read(tmp_path):
    import decimal
    table = pa.table({"carrier": pa.array(["AA", "UA", "AA"]).dictionary_encode(),
                      "fare": pa.array([decimal.Decimal("1.50"), decimal.Decimal("2.50"), None], pa.decimal128(6, 2)),
                      "half": pa.array([1.0, 3.0, 5.0], pa.float16())})
    path = write(tmp_path / "rows.parquet", parquet_bytes(table))
    spec = make_spec(carrier=string_lookup("carrier"), fare=NORMALIZATION,
                     half={"source": "half", "layer": "Normalization"})
    run(spec, [path], "parquet", tmp_path / "out")
    arts = prepro.load(str(tmp_path / "out"))
    assert arts.vocabulary("carrier") == ["AA", "UA"]
    assert figures(arts.manifest, "fare")["missing"] == 1
    assert arts.manifest["features"]["fare"]["state"]["count"] == 2
    assert pathlib.Path(state_path(tmp_path / "out", "half/mean.txt")).read_text() == "3.0\n"


# --- structure ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,body,fragment", [
    ("parquet", parquet_bytes(pa.table({"other": ["AA"]})), "missing column(s) ['carrier']"),
    ("text", b"AA\n", "the spec reads column(s) ['carrier'], but a text file has the single column 'text'"),
])
def test_missing_column(tmp_path, fmt, body, fragment):
    path = write(tmp_path / f"rows.{EXT[fmt]}", body)
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], fmt, tmp_path / "out")
    assert_error(message, path, fragments=[fragment])
    if fmt == "parquet":
        assert_error(message, feature="carrier")


def test_tfrecord_feature_absent_everywhere(tmp_path):
    # Examples have no fixed schema: an absent feature is a missing value, and one that
    # no Example holds leaves its feature nothing to learn.
    path = write(tmp_path / "rows.tfrecord", tfrecord_bytes([tf_example(other=[b"x"])] * 2))
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], "tfrecord", tmp_path / "out")
    assert_error(message, feature="carrier", fragments=["no tokens to learn", "0 values"])


@pytest.mark.parametrize("fmt,body", [
    ("csv", b"carrier,carrier\nAA,UA\n"),
    ("parquet", None),
])
def test_duplicate_column_the_spec_reads(tmp_path, fmt, body):
    if body is None:
        body = parquet_bytes(pa.Table.from_arrays([pa.array(["AA"]), pa.array(["UA"])], names=["carrier", "carrier"]))
    path = write(tmp_path / f"rows.{EXT[fmt]}", body)
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], fmt, tmp_path / "out")
    assert_error(message, path, feature="carrier", fragments=["appear more than once", "ambiguous"])


def test_duplicate_column_nobody_reads_is_fine(tmp_path):
    path = write(tmp_path / "rows.csv", b"carrier,x,x\nAA,1,2\n")
    run(make_spec(carrier=string_lookup("carrier")), [path], "csv", tmp_path / "out")
    assert vocabulary(tmp_path) == ["AA"]


def test_jsonl_duplicate_keys_keep_the_last(tmp_path):
    # json.loads keeps the last of repeated keys; so does prepro (documented).
    path = write(tmp_path / "rows.jsonl", b'{"carrier": "AA", "carrier": "UA"}\n')
    run(make_spec(carrier=string_lookup("carrier")), [path], "jsonl", tmp_path / "out")
    assert vocabulary(tmp_path) == ["UA"]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "tfrecord"])
def test_extra_columns_are_ignored(tmp_path, fmt):
    rows = [{"carrier": "AA", "junk": 1.5, "more": "x"}, {"carrier": "UA", "junk": 2.5, "more": "y"}]
    path = put(tmp_path, "rows", fmt, rows)
    run(make_spec(carrier=string_lookup("carrier")), [path], fmt, tmp_path / "out")
    assert sorted(vocabulary(tmp_path)) == ["AA", "UA"]


def test_extra_columns_of_any_type_or_encoding_are_not_read(tmp_path):
    table = pa.table({"carrier": ["AA"], "nested": pa.array([{"a": 1}], STRUCT),
                      "big": pa.array([2 ** 64 - 1], pa.uint64())})
    parquet = write(tmp_path / "rows.parquet", parquet_bytes(table))
    manifest = run(make_spec(carrier=string_lookup("carrier")), [parquet], "parquet", tmp_path / "out")
    assert figures(manifest, "carrier")["values"] == 1
    csv = write(tmp_path / "rows.csv", b"carrier,other\nAA,\xff\xfe\n")
    manifest = run(make_spec(carrier=string_lookup("carrier")), [csv], "csv", tmp_path / "out2")
    assert figures(manifest, "carrier")["values"] == 1 and figures(manifest, "carrier")["invalid_utf8_skipped"] == 0


@pytest.mark.parametrize("body,row,counts", [
    (b"carrier,flight\nAA,1\nUA\n", 2, "expected 2 columns, got 1"),
    (b"carrier,flight\nAA,1\nUA,2,3\n", 2, "expected 2 columns, got 3"),
])
def test_csv_ragged_row(tmp_path, body, row, counts):
    path = write(tmp_path / "rows.csv", body)
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], "csv", tmp_path / "out")
    assert_error(message, path, row=row, fragments=[counts])


def test_blank_lines(tmp_path):
    # text: a blank line is a row (an empty document, as adapt() on the lines sees it);
    # CSV: not a row (pyarrow's rule, and error rows skip it too); JSON Lines: an error.
    text = write(tmp_path / "rows.txt", b"a b\n\nc\n")
    manifest = run(make_spec(review=text_vectorization()), [text], "text", tmp_path / "t")
    assert figures(manifest, "review")["rows"] == 3 and figures(manifest, "review")["documents"] == 3
    csv = write(tmp_path / "rows.csv", b"carrier\n\nAA\n\n\nUA\n")
    assert file_rows(run(make_spec(carrier=string_lookup("carrier")), [csv], "csv", tmp_path / "c")) == {"rows.csv": 2}
    jsonl = write(tmp_path / "rows.jsonl", b'{"carrier": "AA"}\n\n{"carrier": "UA"}\n')
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [jsonl], "jsonl", tmp_path / "j")
    assert_error(message, jsonl, row=2, fragments=["empty line"])


@pytest.mark.parametrize("fmt", ["text", "csv", "jsonl"])
def test_crlf_and_byte_order_mark_read_as_plain_lines(tmp_path, fmt):
    # CRLF line ends and a UTF-8 byte order mark at the start of the file give exactly
    # the artifact of the plain file (the BOM is an encoding signature, not content:
    # not part of the first token, nor of the CSV header's first name).
    source, spec = _token_spec(fmt)
    rows = [{source: "alpha"}, {source: "beta"}, {source: "alpha"}]
    plain = encode(fmt, rows)
    variant = b"\xef\xbb\xbf" + plain.replace(b"\n", b"\r\n")
    run(spec, [write(tmp_path / f"plain.{EXT[fmt]}", plain)], fmt, tmp_path / "a")
    run(spec, [write(tmp_path / f"variant.{EXT[fmt]}", variant)], fmt, tmp_path / "b")
    assert pathlib.Path(state_path(tmp_path / "a", "carrier/vocabulary.txt")).read_bytes() == b"alpha\nbeta\n"
    assert pathlib.Path(state_path(tmp_path / "b", "carrier/vocabulary.txt")).read_bytes() == b"alpha\nbeta\n"


# --- emptiness ------------------------------------------------------------------------

@pytest.mark.parametrize("fmt,outcome", [
    ("text", 0), ("jsonl", 0), ("tfrecord", 0),
    ("csv", "empty CSV file: there is no header line"),
    ("parquet", "Parquet file size is 0 bytes"),
])
def test_zero_byte_file(tmp_path, fmt, outcome):
    # No rows where the format allows an empty file; CSV needs its header, Parquet its footer.
    source, spec = _token_spec(fmt)
    good = put(tmp_path, "good", fmt, [{source: "AA"}])
    empty = write(tmp_path / f"empty.{EXT[fmt]}", b"")
    if isinstance(outcome, int):
        assert file_rows(run(spec, [good, empty], fmt, tmp_path / "out"))[empty.name] == outcome
        return
    message = analyze_error(spec, [good, empty], fmt, tmp_path / "out")
    assert_error(message, empty, fragments=[outcome])


def test_header_only_csv_and_parquet_without_row_groups_hold_no_rows(tmp_path):
    spec = make_spec(carrier=string_lookup("carrier"))
    header_only = write(tmp_path / "header.csv", b"carrier,flight\n")
    good = write(tmp_path / "good.csv", b"carrier\nAA\n")
    assert file_rows(run(spec, [good, header_only], "csv", tmp_path / "a")) == {"good.csv": 1, "header.csv": 0}
    no_groups = tmp_path / "empty.parquet"
    pq.ParquetWriter(str(no_groups), pa.schema([("carrier", pa.string())])).close()
    assert pq.ParquetFile(no_groups).num_row_groups == 0
    full = write(tmp_path / "full.parquet", parquet_bytes(pa.table({"carrier": ["AA"]})))
    assert file_rows(run(spec, [full, no_groups], "parquet", tmp_path / "b")) == {"full.parquet": 1,
                                                                                 "empty.parquet": 0}
    message = analyze_error(spec, [no_groups], "parquet", tmp_path / "c")
    assert_error(message, no_groups, fragments=["the inputs hold no rows"])


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "tfrecord"])
def test_file_without_values_for_a_feature(tmp_path, fmt):
    # One file's rows all miss the string and the numeric column: counted missing (an
    # empty CSV cell is a missing number but the empty string for a string feature,
    # as Keras's StringLookup learns ""); the job goes on with the other file.
    spec = make_spec(carrier=string_lookup("carrier"), fare=NORMALIZATION,
                     bins={"source": "fare", "layer": "Discretization", "config": {"num_bins": 2}})
    good = put(tmp_path, "a", fmt, [{"carrier": "AA", "fare": 1.0, "n": 1}, {"carrier": "UA", "fare": 3.0, "n": 2}])
    empty = put(tmp_path, "b", fmt, [{"carrier": None, "fare": None, "n": 3}] * 3, ["carrier", "fare", "n"])
    manifest = run(spec, [good, empty], fmt, tmp_path / "out")
    for name in ("fare", "bins"):
        assert figures(manifest, name)["missing"] == 3 and figures(manifest, name)["values"] == 2
    assert figures(manifest, "carrier")["missing"] == (0 if fmt == "csv" else 3)
    assert pathlib.Path(state_path(tmp_path / "out", "fare/mean.txt")).read_text() == "2.0\n"


@pytest.mark.parametrize("layer", ["Normalization", "Discretization"])
def test_batches_without_a_present_value(tmp_path, layer):
    # Before: 'cannot reshape array of size 0' as soon as one batch had no value.
    # 64-byte batches: the first batches hold only empty cells.
    feature = {"source": "fare", "layer": layer, **({"config": {"num_bins": 2}} if layer == "Discretization" else {})}
    path = write(tmp_path / "rows.csv", b"fare,n\n" + b",1\n" * 60 + b"1,1\n3,1\nnan,1\n")
    manifest = run(make_spec(fare=feature), [path], "csv", tmp_path / "out", batch_bytes=64)
    assert figures(manifest, "fare") == {"rows": 63, "values": 2, "missing": 60, "nan": 1, "infinite": 0,
                                         "zero_weight": 0}


@pytest.mark.parametrize("layer", ["Normalization", "Discretization"])
@pytest.mark.parametrize("body,fragment", [
    (b"fare,n\n,1\n,2\n", "2 missing"),
    (b"fare,n\nnan,1\nNaN,2\n", "2 NaN"),
], ids=["all-missing", "all-nan"])
def test_numeric_feature_without_any_value(tmp_path, layer, body, fragment):
    feature = {"source": "fare", "layer": layer, **({"config": {"num_bins": 2}} if layer == "Discretization" else {})}
    path = write(tmp_path / "rows.csv", body)
    message = analyze_error(make_spec(fare=feature), [path], "csv", tmp_path / "out")
    assert_error(message, feature="fare", fragments=["no values to learn from", fragment])


@pytest.mark.parametrize("weight", [b"-1", b"nan", b"inf", b"1e300"])
def test_bad_weight_names_its_row(tmp_path, weight):
    # 1e300: finite, but three of them overflow a float64 total (exact quantiles then
    # warned on stderr; the sketch gave a wrong boundary): weights stay in float32's range.
    spec = make_spec(fare={"source": "fare", "layer": "Discretization", "config": {"num_bins": 2}, "weight": "w"})
    path = write(tmp_path / "rows.csv", b"fare,w\n1,1\n2," + weight + b"\n3,1\n")
    message = analyze_error(spec, [path], "csv", tmp_path / "out")
    assert_error(message, path, row=2, feature="fare", fragments=["weights must be finite"])


def test_zero_weights(tmp_path):
    spec = make_spec(fare={"source": "fare", "layer": "Discretization", "config": {"num_bins": 2}, "weight": "w"})
    some = write(tmp_path / "some.csv", b"fare,w\n1,0\n2,1\n3,1\n")
    assert figures(run(spec, [some], "csv", tmp_path / "a"), "fare")["zero_weight"] == 1
    all_zero = write(tmp_path / "all.csv", b"fare,w\n1,0\n2,0\n")
    message = analyze_error(spec, [all_zero], "csv", tmp_path / "b")
    assert_error(message, feature="fare", fragments=["no values to learn from", "2 with weight 0"])


# --- JSON Lines -----------------------------------------------------------------------

@pytest.mark.parametrize("line,fragment", [
    (b"[1, 2]", "a JSON Lines row must be an object"),
    (b'"AA"', "a JSON Lines row must be an object"),
    (b'{"carrier": "AA"} {"carrier": "UA"}', "not a JSON object: Extra data"),
    (b'{"carrier": "AA"', "not a JSON object"),
    (b'{"carrier": ' + b"[" * 100000 + b"]" * 100000 + b"}", "nested too deeply"),
    (b'{"other": ' + b"{\"a\": " * 50000 + b"1" + b"}" * 50000 + b', "carrier": "AA"}', "nested too deeply"),
], ids=["array", "string", "trailing-garbage", "unterminated", "deep-list", "deep-object-elsewhere"])
def test_jsonl_malformed_row(tmp_path, line, fragment):
    # Before: deep nesting ended in a raw RecursionError.
    path = write(tmp_path / "rows.jsonl", b'{"carrier": "AA"}\n' + line + b"\n")
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], "jsonl", tmp_path / "out")
    assert_error(message, path, row=2, fragments=[fragment])


def test_jsonl_nan_and_infinity_literals(tmp_path):
    # Python's json reads NaN and +-Infinity as floats: the numeric policy applies.
    path = write(tmp_path / "rows.jsonl", b'{"fare": NaN}\n{"fare": Infinity}\n{"fare": -Infinity}\n{"fare": 2}\n')
    manifest = run(make_spec(fare={"source": "fare", "layer": "Discretization", "config": {"num_bins": 2}}),
                   [path], "jsonl", tmp_path / "out")
    assert figures(manifest, "fare") == {"rows": 4, "values": 3, "missing": 0, "nan": 1, "infinite": 2,
                                         "zero_weight": 0}
    message = analyze_error(make_spec(fare=NORMALIZATION), [path], "jsonl", tmp_path / "out2")
    assert_error(message, path, row=2, feature="fare", fragments=["infinite"])
    message = analyze_error(make_spec(carrier=string_lookup("fare")), [path], "jsonl", tmp_path / "out3")
    assert_error(message, path, row=1, feature="carrier", fragments=["expected string values, found nan"])


# --- TFRecord -------------------------------------------------------------------------

def _records(n=3):
    return [tf_example(carrier=[f"C{i}".encode()]) for i in range(n)]


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 1]) + data[at + 1:]


@pytest.mark.parametrize("damage,row,fragment", [
    (lambda d: _flip(d, 8), 1, "a record's length does not match its checksum"),
    (lambda d: _flip(d, len(d) // 3 * 2 - 6), 2, "a record's data does not match its checksum"),
    (lambda d: d[:-3], 3, "truncated TFRecord: the file ends inside a record"),
    (lambda d: d + b"\x01\x02", 4, "truncated TFRecord: the file ends inside a record's header"),
    (lambda d: d + _huge_record_header(), 4, "truncated TFRecord: the file ends inside a record (0 of"),
], ids=["length-crc", "data-crc", "truncated-record", "truncated-header", "huge-claimed-length"])
def test_tfrecord_damage(tmp_path, damage, row, fragment):
    path = write(tmp_path / "rows.tfrecord", damage(tfrecord_bytes(_records())))
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], "tfrecord", tmp_path / "out")
    assert_error(message, path, row=row, fragments=[fragment])
    assert len(message) < 500  # not the record in hex (Beam's reader puts it there)


def _huge_record_header() -> bytes:
    # A length of 2**40 bytes with a matching checksum: read as what there is, not
    # allocated up front.
    import struct
    from apache_beam.io.tfrecordio import _TFRecordUtil
    length = struct.pack("<Q", 1 << 40)
    return length + struct.pack("<I", _TFRecordUtil._masked_crc32c(length))


@pytest.mark.parametrize("payload", [b"not a protobuf \xff\xff", b"\x0a\x05\x0a\x03\x0a\x01"],
                         ids=["garbage", "truncated-example"])
def test_tfrecord_payload_that_is_not_an_example(tmp_path, payload):
    path = write(tmp_path / "rows.tfrecord", tfrecord_bytes(_records(2) + [payload] + _records(1)))
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], "tfrecord", tmp_path / "out")
    assert_error(message, path, row=3, fragments=["not a tf.train.Example"])


def test_tfrecord_numeric_features_from_float_and_int64_lists(tmp_path):
    # float_list and int64_list both feed numeric features; a feature whose kind is not
    # set and an absent one are missing values.
    records = [tf_example(fare=[1.5], bins=[1]), tf_example(fare=[2.5], bins=[3]),
               tf_example(fare=None, bins=[5]), tf_example(bins=[7])]
    path = write(tmp_path / "rows.tfrecord", tfrecord_bytes(records))
    spec = make_spec(fare=NORMALIZATION, bins={"source": "bins", "layer": "Discretization",
                                               "config": {"num_bins": 2}, "quantiles": "exact"})
    manifest = run(spec, [path], "tfrecord", tmp_path / "out")
    assert figures(manifest, "fare")["missing"] == 2 and figures(manifest, "fare")["values"] == 2
    assert pathlib.Path(state_path(tmp_path / "out", "fare/mean.txt")).read_text() == "2.0\n"
    assert pathlib.Path(state_path(tmp_path / "out", "fare/variance.txt")).read_text() == "0.25\n"
    assert pathlib.Path(state_path(tmp_path / "out", "bins/boundaries.txt")).read_text() == "3.0\n"


def test_tfrecord_float_list_values_are_float32(tmp_path):
    # A float_list holds float32: 0.1 arrives as float32(0.1), as Keras would see it.
    path = write(tmp_path / "rows.tfrecord", tfrecord_bytes([tf_example(fare=[0.1])] * 2))
    run(make_spec(fare=NORMALIZATION), [path], "tfrecord", tmp_path / "out")
    mean = float(pathlib.Path(state_path(tmp_path / "out", "fare/mean.txt")).read_text())
    assert mean != 0.1 and math.isclose(mean, 0.1, rel_tol=1e-7)


# --- found by tests/test_fuzz_readers.py -----------------------------------------------

def test_fuzz_regression_parquet_error_message_with_a_newline(tmp_path):
    # pyarrow's message for a damaged Parquet footer ends with "\n"; the error must
    # still be one line (the CLI prints one).
    body = parquet_bytes(pa.table({"s": pa.array([], pa.string())}))
    at = body.index(b"\x12\x00\x00\x00\x15\x04\x19,5")
    path = write(tmp_path / "rows.parquet", body[:at] + body[at + 5:])
    message = analyze_error(make_spec(s=string_lookup("s")), [path], "parquet", tmp_path / "out")
    assert_error(message, path, fragments=["cannot read as parquet: Couldn't deserialize thrift"])


def test_fuzz_regression_csv_ragged_row_not_utf8(tmp_path, monkeypatch):
    # pyarrow cannot hand a row that is not UTF-8 to an invalid-row handler: it printed
    # "Exception ignored ... UnicodeDecodeError" on stderr and the error named no row.
    unraisable = []
    monkeypatch.setattr("sys.unraisablehook", unraisable.append)
    path = write(tmp_path / "rows.csv", b"carrier,flight\nAA,1\nU\xf3A\n")
    message = analyze_error(make_spec(carrier=string_lookup("carrier")), [path], "csv", tmp_path / "out")
    assert_error(message, path, row=2, fragments=["expected 2 columns, got 1", "U\ufffdA"])
    assert unraisable == []


def test_fuzz_regression_parquet_column_name_not_utf8(tmp_path):
    # pyarrow decodes a Parquet schema's names strictly: before, a raw UnicodeDecodeError.
    body = parquet_bytes(pa.table({"s": ["a", "b"]}))
    at = body.index(b"\x18\x01s")
    path = write(tmp_path / "rows.parquet", body[:at + 2] + b"\xf3" + body[at + 3:])
    message = analyze_error(make_spec(s=string_lookup("s")), [path], "parquet", tmp_path / "out")
    assert_error(message, path, fragments=["schema holds text that is not UTF-8"])


def test_fuzz_regression_values_beyond_float32(tmp_path):
    # Keras computes in float32, where 1e300 is +inf: Discretization keeps and counts it,
    # Normalization names its row. Before: RuntimeWarnings on stderr (the float32 cast;
    # squares overflowing the float64 moments) and an infinite variance in the artifact.
    import warnings
    path = write(tmp_path / "rows.csv", b"fare\n1\n1e300\n2\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manifest = run(make_spec(fare={"source": "fare", "layer": "Discretization", "config": {"num_bins": 2},
                                       "quantiles": "exact"}), [path], "csv", tmp_path / "out")
        message = analyze_error(make_spec(fare=NORMALIZATION), [path], "csv", tmp_path / "out2")
    assert figures(manifest, "fare")["infinite"] == 1
    assert pathlib.Path(state_path(tmp_path / "out", "fare/boundaries.txt")).read_text() == "2.0\n"
    assert_error(message, path, row=2, feature="fare", fragments=["infinite (in float32, as Keras computes)"])


def test_fuzz_regression_integer_text_with_a_plus_sign(tmp_path):
    # "+7" passes the integer check but Arrow's cast refuses it: before, a StopIteration
    # (and earlier still, a wrong "out of int64 range" error).
    path = write(tmp_path / "rows.csv", b"flight\n+7\n -3 \n007\n")
    run(make_spec(flight_id=integer_lookup("flight")), [path], "csv", tmp_path / "out")
    assert sorted(vocabulary(tmp_path, "flight_id")) == [-3, 7]


def test_fuzz_regression_null_element_in_a_list_of_number_strings(tmp_path):
    # A null inside a list of strings for a shaped numeric feature is a NaN element.
    # Before: TypeError (the regex check gave None for it).
    table = pa.table({"v": pa.array([["1", None], ["2", "3"], ["4", "5"]])})
    path = write(tmp_path / "rows.parquet", parquet_bytes(table))
    manifest = run(make_spec(v={"source": "v", "layer": "Normalization", "shape": [2]}), [path], "parquet",
                   tmp_path / "out")
    assert figures(manifest, "v")["nan"] == 1 and figures(manifest, "v")["values"] == 4
