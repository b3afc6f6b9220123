"""`--keep-state`: every vocabulary feature's mergeable state (all distinct tokens with
their counts) written beside its vocabulary, checked against counts computed here, and
byte-identical whatever the shard count, file order or element route."""

import collections
import json
import os
import random

import apache_beam as beam
import pyarrow as pa
import pytest

import prepro
from conftest import snapshot, state_path, write_csv_columns, write_jsonl
from pipelines import cli
from pipelines.analyze import AnalyzeFeatures, run_analyze
from prepro import artifacts, state_files
from prepro.artifacts import ArtifactError
from prepro.spec import spec_from_dict

WORDS = [f"w{i:03d}" for i in range(300)]
SPEC = {"features": {
    "review": {"source": "text", "layer": "TextVectorization",
               "config": {"ngrams": 2, "output_mode": "tf_idf", "max_tokens": 50}},
    "carrier": {"source": "carrier", "layer": "StringLookup", "config": {"max_tokens": 5}},
    "flight": {"source": "flight", "layer": "IntegerLookup"},
}}


def _rows(n, seed):
    rnd = random.Random(seed)
    return [{"text": " ".join(rnd.choice(WORDS[:rnd.randint(5, 300)]) for _ in range(rnd.randint(0, 12))),
             "carrier": rnd.choice(["AA", "UA", "DL", "B6", "AS", "WN", "NK", "[UNK]"]),
             "flight": rnd.randint(0, 400)} for _ in range(n)]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("keep_state")
    parts = [_rows(700, seed) for seed in range(3)]
    files = [write_jsonl(base / f"part-{i}.jsonl", rows) for i, rows in enumerate(parts)]
    out = str(base / "kept")
    run_analyze(spec_from_dict(SPEC), files, "jsonl", out, keep_state=True, num_shards=1, golden_rows=0)
    return {"base": base, "files": files, "rows": [r for rows in parts for r in rows], "kept": out}


def _counted(rows, tokens_of):
    """(token -> occurrences, token -> documents), counted here from the rows."""
    counts, documents = collections.Counter(), collections.Counter()
    for row in rows:
        tokens = tokens_of(row)
        counts.update(tokens)
        documents.update(set(tokens))
    return counts, documents


def _text_tokens(row):
    words = row["text"].split()  # lower-case words without punctuation: Keras's standardize keeps them
    return [w.encode() for w in words] + [f"{a} {b}".encode() for a, b in zip(words, words[1:])]


def test_the_kept_state_holds_every_distinct_token_with_its_counts(data):
    arts = prepro.load(data["kept"])
    counts, documents = _counted(data["rows"], _text_tokens)
    review = arts.token_state("review").to_pydict()
    assert review["token"] == sorted(counts)
    assert review["count"] == [counts[t] for t in review["token"]]
    assert review["doc_count"] == [documents[t] for t in review["token"]]  # tf_idf counts documents
    carriers, _ = _counted(data["rows"], lambda r: [r["carrier"].encode()])
    del carriers[b"[UNK]"]  # the OOV token is never learned, nor kept
    carrier = arts.token_state("carrier").to_pydict()
    assert dict(zip(carrier["token"], carrier["count"])) == carriers and carrier["doc_count"] == [0] * len(carriers)
    flights, _ = _counted(data["rows"], lambda r: [r["flight"]])
    flight = arts.token_state("flight").to_pydict()
    assert flight["token"] == sorted(flights) and flight["count"] == [flights[t] for t in flight["token"]]
    # Every learned token is in the state, with the state's count.
    assert set(arts.vocabulary("carrier")) <= {t.decode() for t in carrier["token"]}
    assert arts.manifest["features"]["review"]["state"]["token_state_rows"] == len(counts)


def test_keeping_state_changes_nothing_else(data, tmp_path):
    out = str(tmp_path / "plain")
    run_analyze(spec_from_dict(SPEC), data["files"], "jsonl", out, num_shards=1, golden_rows=0)
    kept, plain = artifacts.read_manifest(data["kept"]), artifacts.read_manifest(out)
    for name, entry in kept["features"].items():
        state = {k: v for k, v in entry["state"].items() if not k.startswith("token_state")}
        assert state == plain["features"][name]["state"] and entry["figures"] == plain["features"][name]["figures"]
    for relpath in plain["files"]:
        assert open(state_path(out, relpath), "rb").read() == open(state_path(data["kept"], relpath), "rb").read()


def _state_files(root):
    manifest = artifacts.read_manifest(root)
    return {relpath: open(state_path(root, relpath), "rb").read() for relpath in manifest["files"]}


def test_the_kept_state_is_byte_identical_for_any_shard_count_and_file_order(data, tmp_path):
    reference = _state_files(data["kept"])
    for shards, files in ((3, data["files"][::-1]), (16, data["files"][1:] + data["files"][:1])):
        out = str(tmp_path / f"shards-{shards}")
        run_analyze(spec_from_dict(SPEC), files, "jsonl", out, keep_state=True, num_shards=shards, golden_rows=0)
        assert _state_files(out) == reference, shards


def test_a_pipelines_own_elements_give_the_same_kept_state(data, tmp_path):
    out = str(tmp_path / "elements")
    with beam.Pipeline() as p:
        _ = (p | beam.Create(data["rows"][::-1])
             | AnalyzeFeatures(SPEC, out, keep_state=True, golden_rows=0, num_shards=2))
    assert _state_files(out) == _state_files(data["kept"])


def test_a_state_larger_than_a_batch_is_cut_into_batches_of_fixed_size(tmp_path):
    """More distinct tokens than TOKEN_STATE_BATCH: the batches and the merge of shards
    across batch boundaries give the same bytes for 1 and 5 shards."""
    n = state_files.TOKEN_STATE_BATCH * 2 + 1234
    path = write_csv_columns(tmp_path / "ids.csv", {"id": [(i * 7919) % (n * 3) for i in range(n)]})
    spec = spec_from_dict({"features": {"id": {"source": "id", "layer": "IntegerLookup"}}})
    outs = []
    for shards in (1, 5):
        outs.append(str(tmp_path / f"out-{shards}"))
        run_analyze(spec, [path], "csv", outs[-1], keep_state=True, num_shards=shards, golden_rows=0)
    assert _state_files(outs[0]) == _state_files(outs[1])
    relpath = artifacts.read_manifest(outs[0])["features"]["id"]["state"]["token_state_file"]
    with pa.ipc.open_file(state_path(outs[0], relpath)) as f:
        sizes = [f.get_batch(i).num_rows for i in range(f.num_record_batches)]
    assert sizes == [state_files.TOKEN_STATE_BATCH] * 2 + [1234]
    assert prepro.load(outs[0]).token_state("id")["token"].to_pylist() == sorted((i * 7919) % (n * 3) for i in range(n))


def test_the_cli_reports_the_kept_state(tmp_path, capsys):
    path = write_csv_columns(tmp_path / "c.csv", {"carrier": ["AA", "UA", "UA"]})
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"features": {"carrier": {"source": "carrier", "layer": "StringLookup"}}}))
    out = str(tmp_path / "out")
    assert cli.main(["analyze", "--spec", str(spec), "--input", path, "--format", "csv", "--output", out,
                     "--golden-rows", "0", "--keep-state"]) == 0
    size = artifacts.read_manifest(out)["files"]["carrier/token_state.arrow"]["bytes"]
    assert f"kept state {size / 1e6:.1f} MB: carrier 2 tokens" in capsys.readouterr().out


# ------------------------------------------------------------------ off the happy path

def test_a_feature_without_kept_state_says_how_to_get_it(tmp_path, data):
    out = str(tmp_path / "plain")
    run_analyze(spec_from_dict(SPEC), data["files"][:1], "jsonl", out, golden_rows=0)
    with pytest.raises(ValueError, match="re-run the analyze job with --keep-state"):
        prepro.load(out).token_state("carrier")
    numeric = spec_from_dict({"features": {"x": {"source": "flight", "layer": "Normalization"}}})
    run_analyze(numeric, data["files"][:1], "jsonl", str(tmp_path / "numeric"), golden_rows=0, keep_state=True)
    with pytest.raises(ValueError, match="Normalization"):
        prepro.load(str(tmp_path / "numeric")).token_state("x")


def _copy(data, tmp_path):
    import shutil
    root = str(tmp_path / "copy")
    shutil.copytree(data["kept"], root)
    return root


def _edit_manifest(root, edit):
    path = os.path.join(root, "manifest.json")
    manifest = json.loads(open(path, "rb").read())
    edit(manifest)
    open(path, "wb").write(artifacts.manifest_bytes({k: v for k, v in manifest.items()
                                                     if k not in ("format", "format_version")}))


def test_a_tampered_state_file_is_refused(data, tmp_path):
    root = _copy(data, tmp_path)
    path = state_path(root, "carrier/token_state.arrow")
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 2] ^= 1
    open(path, "wb").write(bytes(raw))
    with pytest.raises(ArtifactError, match="token_state.arrow"):
        prepro.load(root, verify=False).token_state("carrier")


def _rewrite_state(root, table):
    """Replaces carrier's state file by `table` with a matching checksum."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    _rewrite_state_bytes(root, sink.getvalue().to_pybytes(), table.num_rows)


def _rewrite_state_bytes(root, data, rows):
    open(state_path(root, "carrier/token_state.arrow"), "wb").write(data)

    def edit(m):
        m["files"]["carrier/token_state.arrow"] = artifacts.file_entry(data)
        m["features"]["carrier"]["state"]["token_state_rows"] = rows
    _edit_manifest(root, edit)


def test_a_truncated_state_file_with_a_matching_checksum_is_refused(data, tmp_path):
    root = _copy(data, tmp_path)
    whole = open(state_path(root, "carrier/token_state.arrow"), "rb").read()
    _rewrite_state_bytes(root, whole[:len(whole) // 2], 7)
    with pytest.raises(ArtifactError, match="carrier/token_state.arrow.*not an Arrow IPC file"):
        prepro.load(root).token_state("carrier")


@pytest.mark.parametrize("change,message", [
    (lambda t: t.take([1, 0] + list(range(2, t.num_rows))), "not distinct and sorted"),
    (lambda t: t.set_column(1, "count", pa.array([0] * t.num_rows, pa.int64())), "a count below 1"),
    (lambda t: t.rename_columns(["token", "n", "doc_count"]), "columns ['token', 'n', 'doc_count']"),
    (lambda t: t.set_column(0, "token", t["token"].cast(pa.string())), "of types ['string'"),
    (lambda t: t.set_column(0, "token", pa.array([None] + t["token"].to_pylist()[1:], pa.binary())),
     "a null token or count"),
], ids=["unsorted", "zero counts", "renamed column", "string tokens", "null token"])
def test_a_state_file_that_matches_its_checksum_but_not_its_rules_is_refused(data, tmp_path, change, message):
    root = _copy(data, tmp_path)
    table = prepro.load(root).token_state("carrier")
    _rewrite_state(root, change(table))
    with pytest.raises(ArtifactError, match="carrier/token_state.arrow") as error:
        prepro.load(root).token_state("carrier")
    assert message in str(error.value)


def test_a_state_smaller_than_the_vocabulary_or_without_its_size_is_refused(data, tmp_path):
    root = _copy(data, tmp_path)
    _edit_manifest(root, lambda m: m["features"]["carrier"]["state"].update(token_state_rows=1))
    with pytest.raises(ArtifactError, match="token_state_rows: 1, fewer than the 4 tokens"):
        prepro.load(root)
    _edit_manifest(root, lambda m: m["features"]["carrier"]["state"].pop("token_state_rows"))
    with pytest.raises(ArtifactError, match="token_state_file and token_state_rows go together"):
        prepro.load(root)
