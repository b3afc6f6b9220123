"""Fuzzing the input readers (hypothesis): generated files of every format, valid-ish
structures with random damage (byte flips, cuts, insertions, random compression), random
Unicode (lone surrogates, NUL, line and paragraph separators), random JSON types, random
CSV column sets, random Parquet column types and TFRecord feature kinds.

Each example goes through the reader path a job runs, without Beam (a job per example
would be too slow): `pipelines.io.read_batches`, then every feature kind's extraction
and the golden-row candidates. The property: the only exception is an InputError, whose
single printable line names the file. Bounded by the "ci" profile (tests/conftest.py);
`PREPRO_FUZZ=long` searches longer. A crash found here becomes a named regression test
(tests/test_bad_input_*.py).

One more property runs a few generated valid inputs through the real job in three
formats and checks the artifacts equal each other and a direct count.
"""

import collections
import csv
import io
import itertools
import json
import math
import pathlib
import warnings

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pipelines.transforms import source_columns
from pipelines.checks import checked_tally
from pipelines.errors import InputError
from pipelines.extract import feature_counts
from pipelines.golden import candidate_rows
from pipelines.io import features_of_columns, plan_reads, read_batches
from pipelines.numeric import add_batch, new_stats
import prepro
from conftest import state_path
from prepro.spec import spec_from_dict
from test_bad_input import COMPRESSIONS, parquet_bytes, run, tf_example, tfrecord_bytes

# Columns and the features reading them: every value kind, every layer's extraction
# (stacked and shaped numeric sources, a weight column, text in a column).
COLUMNS = ("s", "i", "f", "h", "v", "w")


def _spec(fmt, policy="error"):
    if fmt == "text":
        return spec_from_dict({"features": {"t": {"source": "text", "layer": "TextVectorization",
                                                  "config": {"ngrams": 2}, "invalid_utf8": policy}}})
    features = {
        "s": {"source": "s", "layer": "StringLookup", "invalid_utf8": policy},
        "t": {"source": "s", "layer": "TextVectorization", "config": {"output_mode": "tf_idf"},
              "invalid_utf8": policy},
        "i": {"source": "i", "layer": "IntegerLookup"},
        "c": {"source": "i", "layer": "CategoryEncoding", "config": {"num_tokens": 1 << 40}},
        "f": {"source": "f", "layer": "Normalization"},
        "q": {"source": "f", "layer": "Discretization", "config": {"num_bins": 3}, "weight": "w"},
        "qe": {"source": "f", "layer": "Discretization", "config": {"num_bins": 3}, "weight": "w",
               "quantiles": "exact"},
        "fw": {"source": ["f", "w"], "layer": "Normalization"},
        "h": {"source": "h", "layer": "Hashing", "config": {"num_bins": 8}, "invalid_utf8": policy},
    }
    if fmt != "csv":  # CSV cells are never lists
        features["v"] = {"source": "v", "layer": "Discretization", "shape": [2], "config": {"num_bins": 2},
                         "quantiles": "exact"}
    return spec_from_dict({"features": features})


def read_everything(path, fmt, spec, batch_bytes, part_bytes):
    """What a job's read tasks do with a file, minus Beam, and the numeric state a
    finalizer computes from each task's statistics: only InputError may escape, and it
    names the file in one printable line; no warning either (it would reach the user's
    stderr). Text and JSON Lines files are read in parts of `part_bytes`."""
    tasks = plan_reads([{"path": str(path), "bytes": path.stat().st_size}], fmt, part_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for task in tasks:
            try:
                _read_task(task, fmt, spec, batch_bytes)
            except InputError as e:
                message = str(e)
                assert str(path) in message, f"the error does not name the file: {message}"
                assert "\n" not in message and message.encode("utf-8"), repr(message)


def _read_task(task, fmt, spec, batch_bytes):
    columns = source_columns(spec)
    stats = {n: new_stats(f) for n, f in spec.features.items() if f.is_numeric}
    for batch in read_batches(task, fmt, columns, batch_bytes, features_of_columns(spec.features.values())):
        for name, feature in sorted(spec.features.items()):
            if feature.is_numeric:
                add_batch(stats[name], batch, feature)
            elif feature.is_stateless:
                checked_tally(batch, feature)
            else:
                feature_counts(batch, feature)
        json.dumps(candidate_rows(batch, columns, spec, 8))
    for name, s in stats.items():
        s.finish()
        if s.counters.values and s.moments is not None:
            assert np.isfinite(s.moments.variance).all()
        elif s.counters.values:
            s.quantiles.boundaries(spec.features[name].options["num_bins"])


# --- generators ------------------------------------------------------------------------

# Any code point, lone surrogates included, with the troublemakers made likely.
TEXT = st.text(st.one_of(st.characters(exclude_categories=()),
                         st.sampled_from("\x00\n\r\u2028\u2029\x85\ufeff\ud800\udfff\"',\\ ")), max_size=12)
SCALARS = st.one_of(st.none(), st.booleans(), TEXT, st.integers(-2 ** 70, 2 ** 70),
                    st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True))


def _containers(inner):
    return st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=2))


JSON_VALUES = st.recursive(SCALARS, _containers, max_leaves=6)
NAMES = st.sampled_from(COLUMNS + ("text", "x", "s ", ""))
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
# Each column's values mostly of the kind its features read, so that reading goes deep;
# otherwise anything.
TYPED = {"s": TEXT, "h": st.one_of(TEXT, st.integers(-2 ** 63, 2 ** 63 - 1)),
         "i": st.integers(-2 ** 63 - 2, 2 ** 63 + 1), "f": st.one_of(FLOATS, st.integers(-2 ** 70, 2 ** 70)),
         "w": st.one_of(st.floats(0, 10), st.just(0.0), FLOATS),
         "v": st.one_of(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=2), st.lists(FLOATS, max_size=3))}


def _value(name, wild):
    typed = TYPED.get(name, JSON_VALUES)
    return st.one_of(typed, JSON_VALUES, st.none()) if wild else st.one_of(typed, st.none())


@st.composite
def header(draw, needed=COLUMNS):
    """Mostly the columns the spec reads in any order, at times with one missing, one
    repeated or an extra one."""
    names = list(draw(st.permutations(needed)))
    if draw(st.booleans()):
        names.insert(draw(st.integers(0, len(names))), draw(NAMES))
    if draw(st.integers(0, 9)) == 0:
        names.pop(draw(st.integers(0, len(names) - 1)))
    return names


def _cell(name, wild):
    """CSV text for a column: numbers written as text, odd spellings, anything."""
    number = st.one_of(st.integers(-2 ** 64, 2 ** 64).map(str), FLOATS.map(repr),
                       st.sampled_from(["nan", "inf", "-Infinity", "1e999", " 1.5 ", "+7"]))
    typed = TEXT if name in ("s", "h") else number
    return st.one_of(typed, TEXT, st.just(""), st.sampled_from(["0x10", "1_0", "--1"])) if wild else \
        st.one_of(typed, st.just(""))


WILD = st.integers(0, 3).map(lambda n: n == 0)  # a quarter of the files hold anything anywhere


@st.composite
def damaged(draw, data: bytes):
    """`data` with up to three flips, cuts, insertions or deletions."""
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, max(len(data), 1) - 1)) if data else 0
        op = draw(st.sampled_from(["flip", "cut", "insert", "delete"]))
        if op == "flip" and data:
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
        elif op == "cut":
            data = data[:at]
        elif op == "insert":
            data = data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]
        elif data:
            data = data[:at] + data[at + draw(st.integers(1, 16)):]
    return data


@st.composite
def stored(draw, content: bytes):
    """The file's bytes and its extension's compression suffix: damage before or after
    an optional compression, as the file would be cut or flipped on disk."""
    kind = draw(st.sampled_from([None, *COMPRESSIONS]))
    if kind is None:
        return draw(damaged(content)), ""
    suffix, compress = COMPRESSIONS[kind]
    if draw(st.booleans()):
        return compress(draw(damaged(content))), suffix
    return draw(damaged(compress(content))), suffix


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@st.composite
def text_files(draw):
    lines = draw(st.lists(TEXT, max_size=8))
    ending = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    bom = draw(st.sampled_from(["", "\ufeff"]))
    return _utf8(bom + ending.join(lines) + draw(st.sampled_from(["", ending])))


@st.composite
def csv_files(draw):
    names, wild = draw(header(COLUMNS[:-2] + ("w",))), draw(WILD)
    rows = []
    for _ in range(draw(st.integers(0, 6))):
        fields = [draw(_cell(name, wild)) for name in names]
        if wild and draw(st.booleans()):  # a ragged row
            fields = fields[:-1] if draw(st.booleans()) else fields + ["x"]
        rows.append(fields)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(names)
    writer.writerows(rows)
    return _utf8(draw(st.sampled_from(["", "\ufeff"])) + out.getvalue())


@st.composite
def jsonl_files(draw):
    rows, wild = [], draw(WILD)
    for _ in range(draw(st.integers(0, 6))):
        if wild and draw(st.booleans()):  # not an object
            rows.append(draw(JSON_VALUES))
        else:
            rows.append({name: draw(_value(name, wild)) for name in draw(header())})
    lines = [json.dumps(r, ensure_ascii=draw(st.booleans())) for r in rows]
    return _utf8("\n".join(lines) + draw(st.sampled_from(["", "\n", "\n\n"])))


ARROW_TYPES = st.sampled_from([
    pa.string(), pa.binary(), pa.large_string(), pa.int64(), pa.int8(), pa.uint64(), pa.float64(),
    pa.float32(), pa.bool_(), pa.null(), pa.list_(pa.string()), pa.list_(pa.float64()),
    pa.list_(pa.int64()), pa.struct([("a", pa.int64())]), pa.map_(pa.string(), pa.int64()),
    pa.dictionary(pa.int32(), pa.string()), pa.timestamp("ms"), pa.list_(pa.list_(pa.int64()))])


def _arrow_values(arrow_type, n):
    """A strategy for n values of `arrow_type` (None among them)."""
    if pa.types.is_dictionary(arrow_type):
        return _arrow_values(pa.string(), n)
    base = {
        "string": TEXT.filter(lambda s: not any("\ud800" <= c <= "\udfff" for c in s)),
        "large_string": st.text(max_size=5), "binary": st.binary(max_size=6),
        "int64": st.integers(-2 ** 63, 2 ** 63 - 1), "int8": st.integers(-128, 127),
        "uint64": st.integers(0, 2 ** 64 - 1), "double": st.floats(), "float": st.floats(width=32),
        "bool": st.booleans(), "null": st.none(), "timestamp[ms]": st.integers(0, 2 ** 40),
    }
    if pa.types.is_list(arrow_type):
        item = _arrow_values(arrow_type.value_type, 1).map(lambda v: v[0])
        value = st.lists(item, max_size=3)
    elif pa.types.is_struct(arrow_type):
        value = st.fixed_dictionaries({"a": st.integers(-5, 5)})
    elif pa.types.is_map(arrow_type):
        value = st.lists(st.tuples(st.text(max_size=3), st.integers(-5, 5)), max_size=2)
    else:
        value = base[str(arrow_type)]
    return st.lists(st.one_of(st.none(), value), min_size=n, max_size=n)


# The right Arrow types for each column, tried half of the time.
RIGHT_TYPES = {"s": [pa.string(), pa.binary(), pa.dictionary(pa.int32(), pa.string()), pa.large_string()],
               "h": [pa.string(), pa.int64()], "i": [pa.int64(), pa.int8(), pa.uint64()],
               "f": [pa.float64(), pa.float32(), pa.int64()], "w": [pa.float64()],
               "v": [pa.list_(pa.float64())]}


@st.composite
def parquet_files(draw):
    n, names, wild = draw(st.integers(0, 6)), draw(header()), draw(WILD)
    arrays = []
    for name in names:
        right = st.sampled_from(RIGHT_TYPES.get(name, [pa.null()]))
        arrow_type = draw(st.one_of(right, ARROW_TYPES) if wild else right)
        values = draw(_arrow_values(arrow_type, n))
        array = pa.array(values, pa.string() if pa.types.is_dictionary(arrow_type) else arrow_type)
        arrays.append(array.dictionary_encode() if pa.types.is_dictionary(arrow_type) else array)
    return parquet_bytes(pa.Table.from_arrays(arrays, names=names))


FEATURE_VALUES = {
    "bytes": st.tuples(st.just("bytes"), st.lists(st.binary(max_size=6), max_size=3)),
    "float": st.tuples(st.just("float"), st.lists(st.floats(width=32), max_size=3)),
    "int": st.tuples(st.just("int"), st.lists(st.integers(-2 ** 63, 2 ** 63 - 1), max_size=3))}
RIGHT_KINDS = {"s": ["bytes"], "h": ["bytes", "int"], "i": ["int"], "f": ["float", "int"], "w": ["float"],
               "v": ["float"]}


def _feature(name, wild):
    right = st.sampled_from(RIGHT_KINDS.get(name, ["bytes"])).flatmap(FEATURE_VALUES.get)
    anything = st.sampled_from(list(FEATURE_VALUES.values())).flatmap(lambda s: s)
    return st.one_of(right, anything, st.none()) if wild else st.one_of(right, st.none())


@st.composite
def tfrecord_files(draw):
    records, wild = [], draw(WILD)
    for _ in range(draw(st.integers(0, 6))):
        if wild and draw(st.booleans()):  # not an Example
            records.append(draw(st.binary(max_size=20)))
        else:
            names = [n for n in draw(header()) if n]
            records.append(tf_example(**{n: draw(_feature(n, wild)) for n in names}))
    return tfrecord_bytes(records)


GENERATORS = {"text": text_files(), "csv": csv_files(), "jsonl": jsonl_files(), "parquet": parquet_files(),
              "tfrecord": tfrecord_files()}
EXT = {"text": "txt", "csv": "csv", "jsonl": "jsonl", "parquet": "parquet", "tfrecord": "tfrecord"}

_NUMBER = itertools.count()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("fmt", list(GENERATORS))
def test_fuzz_reader_raises_only_input_errors(workdir, fmt):
    @settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=st.data())
    def check(data):
        content = data.draw(GENERATORS[fmt], label="content")
        body, suffix = data.draw(stored(content), label="stored")
        path = workdir / f"{next(_NUMBER)}.{EXT[fmt]}{suffix}"
        path.write_bytes(body)
        policy = data.draw(st.sampled_from(["error", "replace", "skip"]), label="invalid_utf8")
        batch_bytes = data.draw(st.sampled_from([16, 1 << 20]), label="batch_bytes")
        part_bytes = data.draw(st.sampled_from([7, 64 << 20]), label="part_bytes")
        read_everything(path, fmt, _spec(fmt, policy), batch_bytes, part_bytes)

    check()


# --- valid inputs through the real job -----------------------------------------------

TOKENS = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=6)
VALID_ROWS = st.lists(st.fixed_dictionaries({
    "s": TOKENS, "i": st.integers(-2 ** 63, 2 ** 63 - 1),
    "f": st.floats(-1e6, 1e6).map(lambda v: float(np.float32(v)))}), min_size=1, max_size=12)


def _write_valid(fmt, rows, path):
    if fmt == "csv":
        out = io.StringIO()
        # Quoted: a lone "\r" in a value would otherwise end a CSV line.
        writer = csv.DictWriter(out, fieldnames=["s", "i", "f"], lineterminator="\n", quoting=csv.QUOTE_ALL)
        writer.writeheader()
        writer.writerows({**r, "f": repr(r["f"])} for r in rows)
        path.write_bytes(out.getvalue().encode())
    elif fmt == "jsonl":
        path.write_bytes("".join(json.dumps(r) + "\n" for r in rows).encode())
    elif fmt == "parquet":
        path.write_bytes(parquet_bytes(pa.Table.from_pylist(rows)))
    else:
        path.write_bytes(tfrecord_bytes([tf_example(s=[r["s"].encode()], i=[r["i"]], f=[r["f"]]) for r in rows]))
    return path


@settings(max_examples=3, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rows=VALID_ROWS, kind=st.sampled_from([None, *COMPRESSIONS]))
def test_fuzz_valid_inputs_give_one_artifact_in_every_format(tmp_path_factory, rows, kind):
    spec = spec_from_dict({"features": {
        "s": {"source": "s", "layer": "StringLookup"}, "i": {"source": "i", "layer": "IntegerLookup"},
        "f": {"source": "f", "layer": "Normalization"}}})
    work = tmp_path_factory.mktemp("valid")
    suffix, compress = COMPRESSIONS[kind] if kind else ("", None)
    states = {}
    for fmt in ("csv", "jsonl", "parquet", "tfrecord"):
        path = _write_valid(fmt, rows, work / f"rows.{EXT[fmt]}")
        if compress:
            path = path.rename(path.with_name(path.name + suffix))
            path.write_bytes(compress(path.read_bytes()))
        run(spec, [path], fmt, work / fmt)
        arts = prepro.load(str(work / fmt))  # full vocabularies (exceptions re-inserted)
        states[fmt] = {"s": arts.vocabulary("s"), "i": arts.vocabulary("i"),
                       "f": pathlib.Path(state_path(work / fmt, "f/mean.txt")).read_text()}
    assert all(state == states["csv"] for state in states.values()), states
    # A direct count: count descending, then the token descending (its UTF-8 bytes for
    # strings, its value for integers).
    for name in ("s", "i"):
        counts = collections.Counter(r[name] for r in rows)
        ranked = sorted(counts, key=lambda t: (counts[t], t.encode() if name == "s" else t), reverse=True)
        assert states["csv"][name] == ranked
    mean = float(states["csv"]["f"])
    assert math.isclose(mean, float(np.mean([r["f"] for r in rows])), rel_tol=1e-9, abs_tol=1e-9)
