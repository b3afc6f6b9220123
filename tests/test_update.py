"""`--base`: an update merges the base's kept state with new inputs, and its artifacts
are byte-identical to a full run over all the inputs (computed here in the same test),
reading only the new inputs; chains of updates; lineage; refused bases."""

import json
import os
import random
import shutil

import numpy as np
import pytest

import prepro
from conftest import state_path, write_jsonl
from pipelines import cli
from pipelines.analyze import run_analyze
from pipelines.base import BaseError
from prepro import artifacts
from prepro.spec import spec_from_dict
from prepro.stats.numeric import rank_error

WORDS = [f"w{i:03d}" for i in range(400)]
FEATURES = {
    "review": {"source": "text", "layer": "TextVectorization",
               "config": {"ngrams": 2, "output_mode": "tf_idf", "max_tokens": 60}},
    "carrier": {"source": "carrier", "layer": "StringLookup", "config": {"max_tokens": 6},
                "min_count": 2},
    "flight": {"source": "flight", "layer": "IntegerLookup"},
    "delay": {"source": ["delay", "fare"], "layer": "Normalization"},
    "fare_bins": {"source": "fare", "layer": "Discretization", "config": {"num_bins": 7},
                  "quantiles": "exact"},
    "fare_sketch": {"source": "fare", "layer": "Discretization", "config": {"num_bins": 5}},
    "carrier_hash": {"source": "carrier", "layer": "Hashing", "config": {"num_bins": 8}},
}
SPEC = spec_from_dict({"features": FEATURES})


def _rows(n, seed):
    """Each part draws from a different slice of the words and carriers: updates bring
    new tokens, change ranks and counts."""
    rnd = random.Random(seed)
    words = WORDS[seed * 60:seed * 60 + 200]
    rows = []
    for _ in range(n):
        rows.append({
            "text": " ".join(rnd.choice(words[:rnd.randint(5, 200)]) for _ in range(rnd.randint(0, 10))),
            "carrier": rnd.choice(["AA", "UA", "DL", "B6", "AS", "WN", "NK", "[UNK]", f"X{seed}"]),
            "flight": rnd.randint(seed * 50, seed * 50 + 300),
            "delay": None if rnd.random() < 0.05 else round(rnd.gauss(10 * seed, 20), 3),
            "fare": round(rnd.lognormvariate(4 + seed / 4, 0.5), 2),
        })
    return rows


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("update")
    return [write_jsonl(root / f"part-{i}.jsonl", _rows(500 + 100 * i, i)) for i in range(3)]


def _analyze(files, out, base=None, **kwargs):
    kwargs.setdefault("golden_rows", 0)
    return run_analyze(SPEC, list(files), "jsonl", str(out), keep_state=True, base=base and str(base), **kwargs)


def _state(root):
    """Everything an update must reproduce: every state file's bytes (by the manifest's
    names) and the manifest but its provenance."""
    manifest = artifacts.read_manifest(str(root))
    files = {relpath: open(state_path(root, relpath), "rb").read() for relpath in manifest["files"]}
    return {k: v for k, v in manifest.items() if k != "provenance"}, files


def _assert_same_except_sketch(update, full):
    (manifest_u, files_u), (manifest_f, files_f) = _state(update), _state(full)
    sketchy = {p for p in files_f if p.startswith("fare_sketch/")}
    assert {p: files_u[p] for p in files_u if p not in sketchy} == {p: files_f[p] for p in files_f if p not in sketchy}
    assert set(files_u) == set(files_f)
    for name in manifest_f["features"]:
        if name != "fare_sketch":
            assert manifest_u["features"][name] == manifest_f["features"][name], name
    assert manifest_u["features"]["fare_sketch"]["figures"] == manifest_f["features"]["fare_sketch"]["figures"]
    # Its moments are exact sums, kept with the sketch: the same bits (only the quantiles differ).
    assert manifest_u["features"]["fare_sketch"]["profile"]["moments"] == \
        manifest_f["features"]["fare_sketch"]["profile"]["moments"]
    assert files_u["fare_sketch/moments_state.arrow"] == files_f["fare_sketch/moments_state.arrow"]


def _fares(files):
    return np.array([json.loads(line)["fare"] for path in files for line in open(path)], np.float64)


def test_an_update_equals_a_full_run_over_both_parts(parts, tmp_path):
    _analyze(parts[:2], tmp_path / "base")
    _analyze(parts[2:], tmp_path / "update", base=tmp_path / "base")
    _analyze(parts, tmp_path / "full")
    _assert_same_except_sketch(tmp_path / "update", tmp_path / "full")
    # The sketch's boundaries: within the recorded bound of the true quantiles of all rows.
    arts = prepro.load(str(tmp_path / "update"))
    bound = arts.manifest["features"]["fare_sketch"]["state"]["rank_error_bound"]
    assert rank_error(_fares(parts), arts.bin_boundaries("fare_sketch"), 5) <= bound


def test_a_chain_of_updates_in_another_order_and_worker_count_equals_a_full_run(parts, tmp_path):
    """Three steps (part 2, then 0, then 1), the last on two worker processes, with
    golden rows: the same artifact as one full run, the golden rows included."""
    _analyze(parts[2:], tmp_path / "one", golden_rows=3)
    _analyze(parts[:1], tmp_path / "two", base=tmp_path / "one", golden_rows=3, num_shards=3)
    _analyze(parts[1:2], tmp_path / "three", base=tmp_path / "two", golden_rows=3, num_shards=5,
             pipeline_args=["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
    _analyze(parts, tmp_path / "full", golden_rows=3)
    _assert_same_except_sketch(tmp_path / "three", tmp_path / "full")
    manifest = artifacts.read_manifest(str(tmp_path / "three"))
    assert manifest["golden"]["rows"] == 3 and prepro.golden.verify(prepro.load(str(tmp_path / "three"))).ok
    lineage = manifest["provenance"]["lineage"]
    assert [[i["path"] for i in step["inputs"]] for step in lineage] == [parts[2:], parts[:1]]
    assert [i["path"] for i in manifest["provenance"]["inputs"]] == parts[1:2]
    assert lineage[-1]["manifest_sha256"] == _sha256(tmp_path / "two" / "manifest.json")
    assert lineage[0]["manifest_sha256"] == _sha256(tmp_path / "one" / "manifest.json")


def _sha256(path):
    import hashlib
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_an_update_reads_only_the_new_inputs(parts, tmp_path):
    """The base's inputs are gone when the update runs; updating in place (base and
    output the same directory) works."""
    old = [shutil.copy(p, str(tmp_path / os.path.basename(p))) for p in parts[:2]]
    _analyze(old, tmp_path / "arts")
    for path in old:
        os.remove(path)
    _analyze(parts[2:], tmp_path / "arts", base=tmp_path / "arts")
    _analyze([p for p in parts[:2]] + parts[2:], tmp_path / "full")
    _assert_same_except_sketch(tmp_path / "arts", tmp_path / "full")


def test_the_updated_layers_match_keras_adapt_on_all_the_rows(parts, tmp_path):
    from conftest import adapted_layer, assert_same_layer
    _analyze(parts[:1], tmp_path / "base")
    _analyze(parts[1:], tmp_path / "update", base=tmp_path / "base")
    arts = prepro.load(str(tmp_path / "update"))
    rows = [json.loads(line) for path in parts for line in open(path)]
    flights = [r["flight"] for r in rows]
    assert_same_layer(arts.layer("flight"), adapted_layer("IntegerLookup", {}, flights), np.array([[0], [5], [9999]]))
    texts = [r["text"] for r in rows]
    reference = adapted_layer("TextVectorization", FEATURES["review"]["config"], texts)
    probe = np.array(texts[:20] + ["w001 w002 nothing"])
    np.testing.assert_array_equal(np.asarray(arts.layer("review")(probe)), np.asarray(reference(probe)))


def test_an_update_with_no_new_rows_gives_the_base_again(parts, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    _analyze(parts[:1], tmp_path / "base")
    _analyze([str(empty)], tmp_path / "update", base=tmp_path / "base")
    assert _state(tmp_path / "update") == _state(tmp_path / "base")


def test_the_cli_updates_and_reports_the_step(parts, tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"features": {"carrier": FEATURES["carrier"], "delay": FEATURES["delay"]}}))
    common = ["analyze", "--spec", str(spec), "--format", "jsonl", "--golden-rows", "0"]
    assert cli.main(common + ["--input", parts[0], "--output", str(tmp_path / "a"), "--keep-state"]) == 0
    assert cli.main(common + ["--input", parts[1], "--output", str(tmp_path / "b"), "--base", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert f"updated {tmp_path / 'a'} (step 2; 500 rows before, 600 new)" in out
    assert "kept state" in out and "carrier 8 tokens, delay exact sums" in out


# --------------------------------------------------------------------------- refused bases

@pytest.fixture(scope="module")
def small_base(tmp_path_factory, parts):
    out = tmp_path_factory.mktemp("small_base") / "base"
    _analyze(parts[:1], out)
    return out


def _copy(base, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(base, target)
    return target


def _refused(base, tmp_path, spec=SPEC, **kwargs):
    out, new = tmp_path / "out", tmp_path / "new.jsonl"
    new.write_text(json.dumps({"text": "a", "carrier": "AA", "flight": 1, "delay": 1.0, "fare": 2.0}) + "\n")
    with pytest.raises(BaseError) as e:
        run_analyze(spec, [str(new)], "jsonl", str(out), base=str(base),
                    golden_rows=kwargs.pop("golden_rows", 0), **kwargs)
    assert not out.exists()  # refused before the job: nothing written
    return str(e.value)


def test_a_base_from_another_spec_is_refused_before_the_job(small_base, tmp_path):
    other = spec_from_dict({"features": {**FEATURES, "carrier": {**FEATURES["carrier"], "min_count": 3}}})
    message = _refused(small_base, tmp_path, spec=other)
    assert "feature 'carrier' was computed with other options (min_count: {\"min_count\": 2} in the base" in message
    fewer = spec_from_dict({"features": {k: v for k, v in FEATURES.items() if k != "flight"}})
    assert "its features" in _refused(small_base, tmp_path, spec=fewer)


def test_a_tampered_base_is_refused_naming_the_file(small_base, tmp_path):
    base = _copy(small_base, tmp_path)
    path = state_path(base, "flight/token_state.arrow")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 1
    open(path, "wb").write(bytes(data))
    message = _refused(base, tmp_path)
    assert "flight/token_state.arrow" in message and "does not match the manifest" in message


def test_a_base_without_kept_state_is_refused(parts, tmp_path):
    plain = tmp_path / "plain"
    run_analyze(SPEC, parts[:1], "jsonl", str(plain), golden_rows=0)
    assert "has no kept state: it was not made with --keep-state" in _refused(plain, tmp_path)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_base_of_an_older_format_version_is_refused(small_base, tmp_path, version):
    from artifact_fixtures import read_manifest_json, to_version_1, to_version_2, write_manifest_json
    base = str(_copy(small_base, tmp_path))
    if version == 3:  # version 3 had no profiles
        manifest = read_manifest_json(base)
        manifest["format_version"] = 3
        for entry in manifest["features"].values():
            entry.pop("profile", None)
        write_manifest_json(base, manifest)
    else:
        to_version_1(base)
    if version == 2:
        to_version_2(base)
    assert f"format version {version}; an update needs the kept state of version 4" in _refused(base, tmp_path)


def test_a_base_with_fewer_golden_candidates_than_asked_for_is_refused(small_base, tmp_path):
    assert "kept 0 golden-row candidates; 4 golden rows need 16" in _refused(small_base, tmp_path, golden_rows=4)


def test_a_missing_base_is_refused(tmp_path):
    assert "no manifest" in _refused(tmp_path / "nowhere", tmp_path).lower() or "nowhere" in _refused(
        tmp_path / "nowhere", tmp_path)


def _forge(base, relpath, data, **state):
    """Replaces a base file by `data` and its checksum in the manifest (a consistent
    forgery, which only the file's own rules can catch)."""
    open(state_path(base, relpath), "wb").write(data)
    path = os.path.join(str(base), "manifest.json")
    manifest = json.loads(open(path, "rb").read())
    manifest["files"][relpath] = artifacts.file_entry(data)
    manifest["features"][relpath.split("/")[0]]["state"].update(state)
    open(path, "wb").write(artifacts.manifest_bytes({k: v for k, v in manifest.items()
                                                     if k not in ("format", "format_version")}))


def _table_bytes(table):
    import pyarrow as pa
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_forged_numeric_states_and_candidates_are_refused_before_the_job(small_base, tmp_path):
    import pyarrow as pa
    from prepro import state_files
    cases = [
        ("delay/moments_state.arrow", _table_bytes(pa.table({"sum": ["1", "x"], "square_sum": ["1", "2"]})), {},
         "a sum that is not a decimal integer"),
        ("delay/moments_state.arrow", _table_bytes(pa.table({"sum": ["1"], "square_sum": ["1"]})), {},
         "1 rows, but the manifest's shape says 2"),
        ("fare_bins/quantile_state.arrow", state_files.quantile_state_bytes(
            np.array([2.0, 1.0]), np.array([1.0, 1.0]), np.array([1, 1])), {"quantile_state_rows": 2},
         "not distinct and sorted"),
        ("fare_sketch/quantile_sketch.pb", b"not a sketch", {}, "Failed to parse serialized Quantiles sketch"),
    ]
    for i, (relpath, data, state, message) in enumerate(cases):
        base = tmp_path / f"base-{i}"
        shutil.copytree(small_base, base)
        _forge(base, relpath, data, **state)
        text = _refused(base, tmp_path)
        assert relpath in text and message in text, (relpath, text)


def test_a_forged_token_state_fails_the_job_naming_the_file_and_publishes_nothing(small_base, tmp_path):
    from pipelines.errors import InputError
    base = tmp_path / "base"
    shutil.copytree(small_base, base)
    table = prepro.load(str(base)).token_state("flight")
    _forge(base, "flight/token_state.arrow", _table_bytes(table.take([1, 0] + list(range(2, table.num_rows)))))
    out = tmp_path / "out"
    with pytest.raises(InputError, match="flight/token_state.arrow.*not distinct and sorted"):
        _analyze([_new_rows(tmp_path)], out, base=base)
    assert not (out / "manifest.json").exists()


def _new_rows(tmp_path):
    path = tmp_path / "new.jsonl"
    path.write_text(json.dumps({"text": "a", "carrier": "AA", "flight": 1, "delay": 1.0, "fare": 2.0}) + "\n")
    return str(path)


def parts_of(base):
    return [i["path"] for i in artifacts.read_manifest(str(base))["provenance"]["inputs"]]


def test_the_kept_numeric_state_is_the_exact_statistics(small_base):
    """The moments state's sums are the exact sums computed here; the exact quantile
    state is every distinct (float32) fare with its multiplicity."""
    from fractions import Fraction
    arts = prepro.load(str(small_base))
    rows = [json.loads(line) for path in parts_of(small_base) for line in open(path)]
    kept = [r for r in rows if r["delay"] is not None]
    import pyarrow as pa
    moments = pa.ipc.open_file(state_path(small_base, "delay/moments_state.arrow")).read_all().to_pydict()
    for position, column in enumerate(["delay", "fare"]):
        exact = sum(Fraction(r[column]) for r in kept)
        assert Fraction(int(moments["sum"][position]), 2 ** 1075) == exact
        assert Fraction(int(moments["square_sum"][position]), 2 ** 2150) == sum(Fraction(r[column]) ** 2 for r in kept)
    state = pa.ipc.open_file(state_path(small_base, "fare_bins/quantile_state.arrow")).read_all().to_pydict()
    values, counts = np.unique(np.array([r["fare"] for r in rows], np.float32).astype(np.float64), return_counts=True)
    assert state["value"] == values.tolist() and state["count"] == counts.tolist()
    assert state["weight"] == [1.0] * len(values)
    assert arts.manifest["features"]["fare_bins"]["state"]["quantile_state_rows"] == len(values)


# --------------------------------------------------------------------------- careless and concurrent use

def test_an_empty_base_is_refused_not_taken_for_a_full_run(small_base, tmp_path):
    """`--base "$PREVIOUS"` with the variable unset must not replace the artifact with a
    full run over the new rows alone."""
    assert "base must be an artifact directory, got ''" in _refused("", tmp_path)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"features": {"carrier": FEATURES["carrier"]}}))
    out = tmp_path / "cli-out"
    assert cli.main(["analyze", "--spec", str(spec), "--input", _new_rows(tmp_path), "--format", "jsonl",
                     "--output", str(out), "--base", ""]) == 1
    assert not (out / "manifest.json").exists()


def test_a_manifest_file_given_as_the_base_says_to_pass_its_directory(small_base, tmp_path):
    assert "is a manifest file: pass its directory" in _refused(os.path.join(str(small_base), "manifest.json"),
                                                              tmp_path)


def test_a_relative_base_works_from_another_working_directory(parts, tmp_path, monkeypatch):
    _analyze(parts[:1], tmp_path / "base")
    monkeypatch.chdir(tmp_path)
    _analyze(parts[1:2], tmp_path / "update", base="base")
    manifest = artifacts.read_manifest(str(tmp_path / "update"))
    assert len(manifest["provenance"]["lineage"]) == 1


def test_an_update_that_repeats_an_input_of_an_earlier_step_is_refused(parts, tmp_path):
    """A retried update that was already published (or a careless re-run) would count
    its rows twice."""
    _analyze(parts[:1], tmp_path / "arts")
    _analyze(parts[1:2], tmp_path / "arts", base=tmp_path / "arts")
    with pytest.raises(BaseError, match=f"input {parts[1]} .* was already counted by step 2"):
        _analyze(parts[1:2], tmp_path / "arts", base=tmp_path / "arts")
    with pytest.raises(BaseError, match="already counted by step 1"):
        _analyze(parts[:1], tmp_path / "other", base=tmp_path / "arts")


def test_an_update_in_place_whose_base_another_job_replaced_publishes_nothing(parts, tmp_path):
    """A pipeline's AnalyzeFeatures(base=OUT, output=OUT) takes the lock only to publish:
    if another job published into OUT meanwhile, publishing would lose that job's rows."""
    import apache_beam as beam
    from pipelines.analyze import AnalyzeFeatures
    out = tmp_path / "arts"
    _analyze(parts[:1], out)
    rows = [json.loads(line) for line in open(parts[2])]
    transform = AnalyzeFeatures(SPEC, str(out), base=str(out), golden_rows=0)  # checked now
    _analyze(parts[1:2], out, base=out)  # another job publishes into it
    before = open(out / "manifest.json", "rb").read()
    with pytest.raises(Exception, match="changed while the update ran"):
        with beam.Pipeline() as p:
            _ = p | beam.Create(rows) | transform
    assert open(out / "manifest.json", "rb").read() == before


def test_a_base_spelling_out_a_keras_default_is_the_same_spec(small_base, tmp_path):
    spelled = spec_from_dict({"features": {**FEATURES, "flight": {**FEATURES["flight"],
                                                                  "config": {"num_oov_indices": 1}}}})
    run_analyze(spelled, [_new_rows(tmp_path)], "jsonl", str(tmp_path / "out"), base=str(small_base), golden_rows=0)


def test_a_forged_count_near_int64s_end_is_refused_not_wrapped(small_base, tmp_path):
    import pyarrow as pa
    from pipelines.errors import InputError
    base = tmp_path / "base"
    shutil.copytree(small_base, base)
    table = prepro.load(str(base)).token_state("flight")
    counts = table["count"].to_pylist()
    counts[0] = 2 ** 62
    _forge(base, "flight/token_state.arrow", _table_bytes(table.set_column(1, "count", pa.array(counts, pa.int64()))))
    with pytest.raises(InputError, match="flight/token_state.arrow.*a count above"):
        _analyze([_new_rows(tmp_path)], tmp_path / "out", base=base)
