"""Weighted vocabularies (`weight` beside a vocabulary feature's config, as TFT's
`tft.vocabulary(weights=...)`): tokens ranked by the sum of their rows' weights,
checked against sums computed here; with every weight 1 the state files equal the
unweighted ones byte for byte; weighted updates equal full runs; bad weights refused."""

import collections
import json
import random
from decimal import Decimal

import numpy as np
import pytest

import prepro
from conftest import state_path, write_jsonl
from pipelines.analyze import run_analyze
from pipelines.errors import InputError
from prepro import artifacts
from prepro.spec import SpecError, spec_from_dict

WORDS = [f"w{i:02d}" for i in range(40)]


def _rows(n, seed, weight=None):
    rnd = random.Random(seed)
    return [{"text": " ".join(rnd.choice(WORDS[:rnd.randint(2, 40)]) for _ in range(rnd.randint(0, 6))),
             "tags": [rnd.choice(WORDS[:10]) for _ in range(rnd.randint(0, 3))],
             "id": rnd.randint(0, 30),
             "w": weight if weight is not None else rnd.choice([0, 0.5, 1, 2.25, 3, 10.125, None])}
            for _ in range(n)]


def _features(weight):
    extra = {"weight": "w"} if weight else {}
    return {"review": {"source": "text", "layer": "TextVectorization", "config": {"ngrams": 2, "max_tokens": 30,
                                                                                  "output_mode": "tf_idf"}, **extra},
            "tags": {"source": "tags", "layer": "StringLookup", "config": {"max_tokens": 8}, **extra},
            "id": {"source": "id", "layer": "IntegerLookup", "min_count": 3, **extra}}


def _weighted_ranking(rows, tokens_of, min_weight=None):
    """Token -> sum of its rows' weights (each occurrence weighs its row's weight), and
    Keras's order by that sum (ties: token descending), computed here."""
    sums = collections.defaultdict(Decimal)
    for row in rows:
        if row["w"] in (None, 0):
            continue
        for token in tokens_of(row):
            sums[token] += Decimal(str(row["w"]))
    ranked = sorted(sums, key=lambda t: (sums[t], t.encode() if isinstance(t, str) else t), reverse=True)
    return [t for t in ranked if min_weight is None or sums[t] >= min_weight], sums


def _bigrams(row):
    words = row["text"].split()
    return words + [f"{a} {b}" for a, b in zip(words, words[1:])]


def test_tokens_rank_by_the_sum_of_their_rows_weights(tmp_path):
    rows = _rows(600, 1)
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    out = str(tmp_path / "out")
    run_analyze(spec_from_dict({"features": _features(True)}), [path], "jsonl", out, golden_rows=0, keep_state=True)
    arts = prepro.load(out)
    expected, _ = _weighted_ranking(rows, _bigrams)
    start = arts.manifest["features"]["review"]["state"]["token_start"]  # (tf_idf: the OOV slot only)
    assert arts.vocabulary("review") == expected[:30 - start]
    expected, _ = _weighted_ranking(rows, lambda r: r["tags"])
    assert arts.vocabulary("tags") == expected[:7]
    expected, sums = _weighted_ranking(rows, lambda r: [r["id"]], min_weight=3)  # min_count on the weight
    assert arts.vocabulary("id") == expected
    state = arts.token_state("id").to_pydict()
    assert {t: w for t, w in zip(state["token"], state["weight"])} == dict(sums)
    figures = arts.figures("id")
    assert figures["zero_weight"] == sum(r["w"] == 0 for r in rows)
    assert figures["missing"] == sum(r["w"] is None for r in rows)


def test_with_every_weight_one_the_state_files_are_the_unweighted_ones(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", _rows(500, 2, weight=1))
    outs = {}
    for weighted in (False, True):
        outs[weighted] = str(tmp_path / f"out-{weighted}")
        run_analyze(spec_from_dict({"features": _features(weighted)}), [path], "jsonl", outs[weighted],
                    golden_rows=0)
    files = {w: artifacts.read_manifest(o)["files"] for w, o in outs.items()}
    assert files[True] == files[False]
    for relpath in files[True]:
        assert open(state_path(outs[True], relpath), "rb").read() == open(state_path(outs[False], relpath), "rb").read()


def test_a_weighted_update_equals_a_full_run(tmp_path):
    spec = spec_from_dict({"features": _features(True)})
    parts = [write_jsonl(tmp_path / f"p{i}.jsonl", _rows(300, 10 + i)) for i in range(2)]
    run_analyze(spec, parts[:1], "jsonl", str(tmp_path / "base"), golden_rows=0, keep_state=True)
    run_analyze(spec, parts[1:], "jsonl", str(tmp_path / "update"), golden_rows=0, base=str(tmp_path / "base"),
                num_shards=4)
    run_analyze(spec, parts, "jsonl", str(tmp_path / "full"), golden_rows=0, keep_state=True)
    update, full = artifacts.read_manifest(str(tmp_path / "update")), artifacts.read_manifest(str(tmp_path / "full"))
    assert update["files"] == full["files"] and update["features"] == full["features"]


@pytest.mark.parametrize("weight,message", [(-1, "holds -1.0; weights must be numbers in [0, 1e+10]"),
                                            ("heavy", "column 'w': expected float values, found 'heavy'"),
                                            (1e11, "weights must be numbers in")])
def test_a_bad_weight_names_feature_file_and_row(tmp_path, weight, message):
    rows = _rows(5, 3, weight=1) + [{"text": "a", "tags": ["a"], "id": 1, "w": weight}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    spec = spec_from_dict({"features": {"tags": _features(True)["tags"]}})
    with pytest.raises(InputError) as error:
        run_analyze(spec, [path], "jsonl", str(tmp_path / "out"), golden_rows=0)
    assert "feature 'tags'" in str(error.value) and "row 6" in str(error.value) and message in str(error.value)


def test_a_weight_is_a_column_name():
    with pytest.raises(SpecError, match="weight must be a column name"):
        spec_from_dict({"features": {"a": {"layer": "StringLookup", "weight": 3}}})
    with pytest.raises(SpecError, match="weight applies to TextVectorization, StringLookup, IntegerLookup and "
                                        "Discretization only"):
        spec_from_dict({"features": {"a": {"layer": "Hashing", "config": {"num_bins": 2}, "weight": "w"}}})
    assert spec_from_dict({"features": {"a": {"layer": "StringLookup", "weight": "w"}}}).to_dict()[
        "features"]["a"]["weight"] == "w"
