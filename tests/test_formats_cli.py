"""Every input format gives the same artifacts; the CLI runs the job and inspects it."""

import csv
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

import prepro
from conftest import adapted_layer, state_path, write_jsonl
from pipelines import cli

ROWS = [{"text": t, "carrier": c, "flight": f} for t, c, f in [
    ("Late again, late!", "AA", 10), ("On time", "DL", 20), ("late LATE crew", "AA", 10),
    ("é café, 😀", "UA", -3), ("007 is a string", "007", 10)]]
FEATURES = {"review": {"source": "text", "layer": "TextVectorization"},
            "carrier": {"source": "carrier", "layer": "StringLookup"},
            "flight": {"source": "flight", "layer": "IntegerLookup"}}


def _write(fmt, path):
    if fmt == "jsonl":
        write_jsonl(path, ROWS)
    elif fmt == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["text", "carrier", "flight"])
            w.writeheader()
            w.writerows(ROWS)
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(ROWS), path)
    elif fmt == "tfrecord":
        with tf.io.TFRecordWriter(str(path)) as w:
            for r in ROWS:
                w.write(tf.train.Example(features=tf.train.Features(feature={
                    "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[r["text"].encode()])),
                    "carrier": tf.train.Feature(bytes_list=tf.train.BytesList(value=[r["carrier"].encode()])),
                    "flight": tf.train.Feature(int64_list=tf.train.Int64List(value=[r["flight"]])),
                })).SerializeToString())
    return str(path)


def _analyze(tmp_path, fmt):
    from pipelines.analyze import run_analyze
    from prepro.spec import spec_from_dict
    out = tmp_path / fmt
    run_analyze(spec_from_dict({"features": FEATURES}), [_write(fmt, tmp_path / f"rows.{fmt}")], fmt, str(out))
    return out


def test_all_formats_give_identical_vocabularies(tmp_path):
    outputs = {fmt: _analyze(tmp_path, fmt) for fmt in ("jsonl", "csv", "parquet", "tfrecord")}
    for feature in FEATURES:
        files = {fmt: open(state_path(out, f"{feature}/vocabulary.txt"), "rb").read() for fmt, out in outputs.items()}
        assert len(set(files.values())) == 1, files
    # CSV fields of a string feature stay strings ("007"), as in every other format.
    reference = adapted_layer("StringLookup", {}, [r["carrier"] for r in ROWS])
    assert prepro.load(str(outputs["csv"])).vocabulary("carrier") == reference.get_vocabulary()[1:]
    assert "007" in reference.get_vocabulary()
    assert prepro.load(str(outputs["tfrecord"])).vocabulary("flight")[0] == 10


def test_text_format_line_rules(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one two\r\nthree\n\nfour")  # \r\n, an empty line, no final \n
    from pipelines.analyze import run_analyze
    from prepro.spec import spec_from_dict
    run_analyze(spec_from_dict({"features": {"t": {"source": "text", "layer": "TextVectorization",
                                                   "config": {"split": None, "standardize": None}}}}),
                [str(tmp_path / "a.txt")], "text", str(tmp_path / "o"))
    arts = prepro.load(str(tmp_path / "o"))
    assert sorted(arts.vocabulary("t")) == ["four", "one two", "three"]
    assert arts.figures("t")["rows"] == 4


def test_cli_analyze_and_inspect_on_the_bundled_example(tmp_path, capsys):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = str(tmp_path / "arts")
    code = cli.main(["analyze", "--spec", os.path.join(root, "examples/spec.yaml"),
                     "--input", os.path.join(root, "examples/data/*.csv"), "--format", "csv", "--output", out])
    assert code == 0
    captured = capsys.readouterr()
    assert re.search(r"12000 rows, 1\.\d MB from 3 file\(s\) in 3 read tasks, 7 feature\(s\), 16 golden rows; "
                     r"[\d.]+ s \([\d.]+ MB/s\) on FnApiRunner", captured.out), captured.out
    # Progress (captured: not a terminal, so plain lines), up to the inputs' 1.3 MB.
    assert captured.err.startswith("prepro: reading 1.3 MB in 3 files\n"), captured.err
    assert re.search(r"^prepro: \d\d:\d\d:\d\d 100% 1\.3/1\.3 MB", captured.err, re.M), captured.err
    assert cli.main(["inspect", out]) == 0
    text = capsys.readouterr().out
    assert text.count("rows read") == 7
    for figure in ("tokens seen", "distinct tokens", "tokens kept", "coverage", "top tokens"):
        assert text.count(figure) == 3
    assert "boundaries                  9" in text and "moments          over 12,000" in text
    assert "missing 266" in text  # delay_minutes left empty in 2% of rows
    arts = prepro.load(out)
    layer = arts.layer("review")
    assert layer(np.array(["the flight was late"], dtype=object)).shape == (1, 32)
