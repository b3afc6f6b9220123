"""Byte-identical artifacts whatever the file order, worker count or shard count.

The corpus is generated from a fixed seed with many frequency ties, and each
feature's max_tokens cuts inside a tie, so any order-dependence in ranking, merging
or writing shows up as different bytes.
"""

import collections
import json
import os
import random

import pytest

import prepro
from conftest import snapshot
from pipelines.analyze import run_analyze
from prepro.spec import spec_from_dict

# --- helpers -------------------------------------------------------------------------

TEXT_LEARNED, CARRIER_LEARNED, FLIGHT_LEARNED = 60, 20, 30

SPEC = {
    "features": {
        # TextVectorization reserves 2 indices (mask "" and OOV) in int mode.
        "review": {"source": "text", "layer": "TextVectorization",
                   "config": {"max_tokens": TEXT_LEARNED + 2}},
        # One OOV index.
        "carrier": {"source": "carrier", "layer": "StringLookup",
                    "config": {"max_tokens": CARRIER_LEARNED + 1}},
        "flight": {"source": "flight", "layer": "IntegerLookup",
                   "config": {"max_tokens": FLIGHT_LEARNED + 1}},
    }
}

# Base words; each is written in surface forms that lower_and_strip_punctuation maps
# back to the base (ASCII case, ASCII punctuation), so the true counts are known.
UNICODE_WORDS = ["café", "naïve", "zürich", "日本", "ñandú", "straße", "øre", "ça"]


def make_corpus(seed=20240611):
    """Rows (dicts) plus the expected count of every standardized text token."""
    rng = random.Random(seed)
    rows_n = 650

    # carrier: 30 codes x 12, 40 codes x 6, "" x 20 (an exception token), 30 nulls.
    carriers = ([f"C{i:02d}" for i in range(30) for _ in range(12)]
                + [f"K{i:02d}" for i in range(40) for _ in range(6)]
                + [""] * 20 + [None] * 30)
    # flight: 50 values x 8, 110 values x 2, 30 nulls; negative and 64-bit values too.
    flight_values = rng.sample(range(-5000, 5000), 160)
    flight_values[0], flight_values[1] = 2 ** 62 + 7, -(2 ** 61)
    flights = ([v for v in flight_values[:50] for _ in range(8)]
               + [v for v in flight_values[50:] for _ in range(2)] + [None] * 30)
    assert len(carriers) == len(flights) == rows_n
    rng.shuffle(carriers)
    rng.shuffle(flights)

    # text: counts drawn from a few values, so most counts are shared by many words.
    bases = [f"w{i:03d}" for i in range(290)] + UNICODE_WORDS
    counts = {b: rng.choice([1, 2, 3, 4, 6, 8]) for b in bases}
    docs = [[] for _ in range(rows_n)]
    for base, count in counts.items():
        for _ in range(count):
            form = rng.choice([base, base.upper() if base.isascii() else base,
                               base + ",", "(" + base + ")", base + "!"])
            docs[rng.randrange(rows_n)].append(form)
    for doc in docs:
        rng.shuffle(doc)
    texts = [" ".join(d) if d else rng.choice(["", "...", "  "]) for d in docs]

    rows = []
    for text, carrier, flight in zip(texts, carriers, flights):
        row = {"text": text}
        if carrier is not None or rng.random() < 0.5:
            row["carrier"] = carrier   # null either as JSON null or as an absent key
        if flight is not None or rng.random() < 0.5:
            row["flight"] = flight
        rows.append(row)
    expected = {
        "review": collections.Counter({b: c for b, c in counts.items()}),
        "carrier": collections.Counter(c for c in carriers if c is not None),
        "flight": collections.Counter(f for f in flights if f is not None),
    }
    return rows, expected


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(path)


def assert_same_bytes(a, b):
    assert sorted(a) == sorted(b), "different file lists"
    for relpath in sorted(a):
        assert a[relpath] == b[relpath], f"{relpath} differs"


def analyze(inputs, output, **kwargs):
    run_analyze(spec_from_dict(SPEC), inputs, "jsonl", str(output), **kwargs)
    files = snapshot(output)
    assert "manifest.json" in files
    assert not any(p.startswith(".prepro-work") for p in os.listdir(output))
    return files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rows, expected = make_corpus()
    root = tmp_path_factory.mktemp("corpus")
    parts = [write_jsonl(root / f"part-{i}.jsonl", chunk)
             for i, chunk in enumerate([rows[:210], rows[210:470], rows[470:]])]
    whole = write_jsonl(root / "whole.jsonl", rows)
    baseline = analyze([str(root / "part-*.jsonl")], tmp_path_factory.mktemp("baseline") / "out")
    return {"parts": parts, "whole": whole, "expected": expected, "baseline": baseline,
            "glob": str(root / "part-*.jsonl")}


def counts_at_cut(counter, learned):
    ranked = sorted(counter.values(), reverse=True)
    return ranked[learned - 1], ranked[learned]


# --- tests ---------------------------------------------------------------------------

def test_corpus_cuts_inside_ties(corpus, tmp_path):
    """The premise: every feature's max_tokens cuts between two tokens of equal count,
    and the artifact keeps exactly max_tokens - reserved tokens."""
    expected = corpus["expected"]
    for name, learned in (("review", TEXT_LEARNED), ("carrier", CARRIER_LEARNED), ("flight", FLIGHT_LEARNED)):
        last_kept, first_dropped = counts_at_cut(expected[name], learned)
        assert last_kept == first_dropped, name
    out = tmp_path / "out"
    out.mkdir()
    for relpath, data in corpus["baseline"].items():
        os.makedirs(os.path.dirname(out / relpath), exist_ok=True)
        (out / relpath).write_bytes(data)
    arts = prepro.load(str(out))
    for name, learned in (("review", TEXT_LEARNED), ("carrier", CARRIER_LEARNED), ("flight", FLIGHT_LEARNED)):
        vocabulary = arts.vocabulary(name)
        assert len(vocabulary) == learned, name
        # Keras's order: count descending, then token descending (UTF-8 bytes / numbers).
        counter = expected[name]
        key = (lambda t: (counter[t], t.encode("utf-8"))) if name != "flight" else (lambda t: (counter[t], t))
        assert vocabulary == sorted(counter, key=key, reverse=True)[:learned], name
    assert arts.vocabulary("carrier")[0] == ""   # exception token, ranked first (count 20)
    figures = arts.figures("carrier")
    assert figures["missing"] == 30 and figures["rows"] == 650


@pytest.mark.parametrize("order", [(2, 0, 1), (1, 2, 0), (0, 1, 2)])
def test_file_order_and_explicit_list_vs_glob(corpus, tmp_path, order):
    inputs = [corpus["parts"][i] for i in order]
    assert_same_bytes(analyze(inputs, tmp_path / "out"), corpus["baseline"])


def test_overlapping_patterns_read_each_file_once(corpus, tmp_path):
    inputs = [corpus["parts"][1], corpus["glob"], corpus["parts"][0]]
    assert_same_bytes(analyze(inputs, tmp_path / "out"), corpus["baseline"])


def test_one_file_vs_three_files_same_state(corpus, tmp_path):
    single = analyze([corpus["whole"]], tmp_path / "out")
    baseline = corpus["baseline"]
    state = {p: b for p, b in baseline.items() if p != "manifest.json"}
    assert {p: b for p, b in single.items() if p != "manifest.json"} == state
    one, three = json.loads(single["manifest.json"]), json.loads(baseline["manifest.json"])
    assert one["features"] == three["features"]
    assert one["files"] == three["files"]
    assert one["provenance"]["rows_read"] == three["provenance"]["rows_read"] == 650


def test_worker_count_and_running_mode(corpus, tmp_path):
    one = analyze(corpus["parts"], tmp_path / "one", pipeline_args=["--direct_num_workers=1"])
    two = analyze(corpus["parts"], tmp_path / "two",
                  pipeline_args=["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    assert_same_bytes(one, two)
    assert_same_bytes(one, corpus["baseline"])


@pytest.mark.parametrize("num_shards", [1, 7])
def test_num_shards(corpus, tmp_path, num_shards):
    files = analyze(corpus["parts"], tmp_path / "out", num_shards=num_shards)
    assert_same_bytes(files, corpus["baseline"])  # the baseline used the default, 16


def test_repeated_run_same_bytes(corpus, tmp_path):
    first = analyze(corpus["parts"], tmp_path / "out")
    second = analyze(corpus["parts"], tmp_path / "out")
    assert_same_bytes(first, second)


@pytest.mark.parametrize("batch_bytes", [1, 997, 20000])
def test_split_files_and_batch_size(corpus, tmp_path, batch_bytes):
    """Parts of a split file (and batches) of any size give the same artifacts."""
    files = analyze([corpus["whole"]], tmp_path / "out", batch_bytes=batch_bytes)
    single = analyze([corpus["whole"]], tmp_path / "single")
    assert_same_bytes(files, single)
