"""The recorded profile (format version 4) and what `prepro diff` reads off it, checked
against independent computations on the generated raw data: counts, the count
distribution, coverage at the cut, quantile shares, moments, PSI, the OOV rate and the
Jensen-Shannon divergence."""

import collections
import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import prepro
from pipelines.analyze import run_analyze
from prepro import profile as profile_lib
from prepro.spec import spec_from_dict

SPEC = {"features": {
    "word": {"source": "word", "layer": "StringLookup", "config": {"max_tokens": 60}},
    "word_all": {"source": "word", "layer": "StringLookup"},
    "text": {"source": "text", "layer": "TextVectorization",
             "config": {"max_tokens": 80, "output_mode": "tf_idf", "standardize": None, "split": "whitespace"}},
    "value": {"source": "value", "layer": "Discretization", "config": {"num_bins": 8}},
    "value_exact": {"source": "value", "layer": "Discretization", "config": {"num_bins": 8}, "quantiles": "exact"},
    "scale": {"source": "value", "layer": "Normalization"},
}}
ROWS = 20_000


def _data(seed: int, shift: float):
    rng = np.random.default_rng(seed)
    words = np.minimum(rng.zipf(1.4 + shift / 4, ROWS), 3000)
    texts = [" ".join(f"t{w}" for w in np.minimum(rng.zipf(1.3, rng.integers(1, 6)), 500)) for _ in range(ROWS)]
    values = rng.lognormal(3 + shift, 1 + shift / 2, ROWS).astype(np.float32).astype(np.float64)
    return [f"w{w}" for w in words], texts, values


def _write(path, data):
    words, texts, values = data
    path.write_text("word,text,value\n" + "".join(f"{w},{t},{float(v)!r}\n" for w, t, v in zip(words, texts, values)))
    return str(path)


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    root = tmp_path_factory.mktemp("profile")
    out = {}
    for label, seed, shift in (("old", 1, 0.0), ("new", 2, 0.4)):
        data = _data(seed, shift)
        run_analyze(spec_from_dict(SPEC), [_write(root / f"{label}.csv", data)], "csv", str(root / label),
                    golden_rows=0)
        out[label] = (prepro.load(str(root / label)), data)
    return out


def test_counts_and_the_count_distribution_are_every_tokens_counts(two_versions):
    arts, (words, texts, _) = two_versions["old"]
    for name, tokens in (("word", words), ("text", [t for line in texts for t in line.split()])):
        truth = collections.Counter(tokens)
        vocabulary, counts = arts.vocabulary(name), arts.token_counts(name)
        assert list(counts) == [truth[t] for t in vocabulary]
        distribution = arts.count_distribution(name)
        expected = collections.Counter(truth.values())
        assert dict(zip(distribution.counts.tolist(), distribution.tokens.tolist())) == dict(expected)
        assert distribution.distinct == len(truth) and distribution.occurrences == len(tokens)
        ranked = np.sort(np.array(list(truth.values())))[::-1]
        for k in (1, 7, len(vocabulary), len(truth) // 2, len(truth)):
            assert distribution.top_mass([k])[0] == ranked[:k].sum()
            assert distribution.count_at_rank([k])[0] == ranked[k - 1]
        # The figure's coverage at the cut is the curve's at the vocabulary size.
        assert distribution.coverage([len(vocabulary)])[0] == pytest.approx(arts.figures(name)["coverage"], abs=1e-6)
        assert arts.figures(name)["coverage"] == pytest.approx(ranked[:len(vocabulary)].sum() / len(tokens), abs=1e-6)


@pytest.mark.parametrize("name", ["value", "value_exact"])
def test_the_quantile_profile_gives_shares_within_its_bound(two_versions, name):
    arts, (_, _, values) = two_versions["old"]
    q = arts.quantile_profile(name)
    state = arts.manifest["features"][name]["state"]
    bound = state["rank_error_bound"] + 1 / q.steps
    assert q.values[0] == values.min() and q.values[-1] == values.max()
    probes = np.quantile(values, np.linspace(0.01, 0.99, 41))
    truth = np.array([(values < x).mean() for x in probes])
    assert np.max(np.abs(q.share_below(probes) - truth)) <= bound
    boundaries = arts.bin_boundaries(name)
    shares = q.bucket_shares(boundaries)
    buckets = np.searchsorted(np.array(boundaries), values.astype(np.float32), side="right")  # Keras's index
    assert np.max(np.abs(shares - np.bincount(buckets, minlength=8) / len(values))) <= 2 * bound
    edges, hist, below, above = q.histogram(30)
    assert abs(hist.sum() + below + above - 1) < 1e-9 and np.all(hist >= 0)
    moments = arts.manifest["features"][name]["profile"]["moments"]
    assert moments["count"] == len(values)
    assert moments["mean"] == pytest.approx(values.mean(), rel=1e-12)
    assert moments["variance"] == pytest.approx(values.var(), rel=1e-9)


def test_psi_and_mean_shift_match_the_raw_values(two_versions):
    old, (_, _, old_values) = two_versions["old"]
    new, (_, _, new_values) = two_versions["new"]
    change = prepro.diff(old, new).features["value_exact"]
    boundaries = np.array(old.bin_boundaries("value_exact"))
    expected = np.bincount(np.searchsorted(boundaries, old_values, side="right"), minlength=8) / len(old_values)
    actual = np.bincount(np.searchsorted(boundaries, new_values, side="right"), minlength=8) / len(new_values)
    truth = float(np.sum((actual - expected) * np.log(actual / expected)))
    assert truth > 0.1  # a real shift, so the comparison means something
    assert change.metrics["psi"] == pytest.approx(truth, rel=0.05)
    shift = (new_values.mean() - old_values.mean()) / old_values.std()
    assert change.metrics["mean_shift"] == pytest.approx(abs(shift), rel=1e-9)
    normalization = prepro.diff(old, new).features["scale"]
    assert normalization.metrics["mean_shift"] == pytest.approx(abs(shift), rel=1e-9)


def test_oov_rate_is_exact_when_new_kept_every_token_and_bounded_otherwise(two_versions):
    old, (old_words, _, _) = two_versions["old"]
    new, (new_words, _, _) = two_versions["new"]
    comparison = prepro.diff(old, new)
    for name in ("word_all", "word"):
        in_old = set(old.vocabulary(name))
        truth = sum(1 for w in new_words if w not in in_old) / len(new_words)
        change = comparison.features[name]
        if name == "word_all":  # NEW kept every token it saw
            assert change.details["oov_rate_exact"] and change.metrics["oov_rate"] == pytest.approx(truth, abs=1e-12)
        else:
            assert not change.details["oov_rate_exact"]
            assert change.details["oov_rate_low"] - 1e-12 <= truth <= change.metrics["oov_rate"] + 1e-12
        added = set(new.vocabulary(name)) - in_old
        dropped = in_old - set(new.vocabulary(name))
        assert change.metrics["added"] == len(added) and change.metrics["dropped"] == len(dropped)
        counts = collections.Counter(new_words)
        assert all(counts[t] == c for t, c in change.details["top_added"])


def test_js_divergence_over_the_pooled_vocabularies(two_versions):
    old, (old_words, _, _) = two_versions["old"]
    new, (new_words, _, _) = two_versions["new"]
    a, b = collections.Counter(old_words), collections.Counter(new_words)
    kept_old, kept_new = set(old.vocabulary("word")), set(new.vocabulary("word"))
    union = sorted(kept_old | kept_new)
    p = [a[t] if t in kept_old else 0 for t in union] + [sum(c for t, c in a.items() if t not in kept_old)]
    q = [b[t] if t in kept_new else 0 for t in union] + [sum(c for t, c in b.items() if t not in kept_new)]
    p, q = np.array(p, float) / sum(p), np.array(q, float) / sum(q)
    m = (p + q) / 2
    truth = 0.5 * sum(x * np.log2(x / y) for x, y in zip(p, m) if x) + 0.5 * sum(
        x * np.log2(x / y) for x, y in zip(q, m) if x)
    assert prepro.diff(old, new).features["word"].metrics["js"] == pytest.approx(truth, rel=1e-9)
    assert prepro.diff(old, old).features["word"].metrics["js"] == 0.0


def test_an_artifact_against_itself_changes_nothing(two_versions):
    old, _ = two_versions["old"]
    same = prepro.diff(old, old)
    for name, change in same.features.items():
        m = change.metrics
        assert m.get("added", 0) == m.get("dropped", 0) == m.get("moved", 0) == 0, name
        assert m.get("mean_shift", 0) == 0 and abs(m.get("psi", 0)) < 1e-12 and m.get("js", 0) == 0, name
        if "oov_rate" in m:  # its own OOV share: what its cut leaves out
            assert change.details["oov_rate_exact"]
            assert m["oov_rate"] == pytest.approx(1 - old.figures(name)["coverage"], abs=1e-6)
    assert same.failing("psi > 0 or js > 0 or added > 0 or mean_shift > 0") == []


def test_the_gate_takes_comparisons_and_refuses_anything_else():
    gate = prepro.compare.Gate("psi>0.2 or oov_rate > 0.05 and not added == 0")
    assert gate({"psi": 0.3}) and not gate({"psi": 0.1}) and gate({"oov_rate": 0.1, "added": 3})
    assert not gate({})  # a metric a feature lacks makes its comparison false
    assert prepro.compare.Gate("0.1 < psi <= 0.5")({"psi": 0.5})
    for bad, words in (("psi >", "not an expression"), ("psii > 1", "unknown metric 'psii'"),
                       ("__import__('os').system('true')", "is not a comparison"), ("psi > 'a'", "neither"),
                       ("psi + 1 > 2", "neither a metric nor a number")):
        with pytest.raises(ValueError, match=words.replace("(", r"\(")):
            prepro.compare.Gate(bad)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True, timeout=300)


def test_diff_cli_prints_json_and_gates_with_its_exit_status(two_versions):
    old, new = two_versions["old"][0].root, two_versions["new"][0].root
    shown = _cli("diff", old, new, "--json")
    assert shown.returncode == 0, shown.stderr
    parsed = json.loads(shown.stdout)
    assert parsed["features"]["value_exact"]["psi"] > 0.1 and parsed["features"]["word"]["layer"] == "StringLookup"
    gated = _cli("diff", old, new, "--fail-on", "psi>0.1")
    assert gated.returncode == 1 and "value_exact" in gated.stderr and "psi>0.1" in gated.stderr
    assert _cli("diff", old, new, "--fail-on", "psi>50").returncode == 0
    refused = _cli("diff", old, new, "--fail-on", "psy>1")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "unknown metric 'psy'" in refused.stderr
    missing = _cli("diff", old, old + "-nothing-here")
    assert missing.returncode == 2 and "no manifest.json" in missing.stderr


def test_profile_readers_refuse_forged_files(tmp_path):
    with pytest.raises(ValueError, match="descending"):
        from prepro import state_files
        state_files.read_count_distribution(b"3 1\n5 2\n", 2)
    with pytest.raises(ValueError, match="sorted"):
        state_files.read_quantile_profile(b"1.0\n0.5\n2.0\n", 2)
    with pytest.raises(ValueError, match="2 counts, but"):
        state_files.read_counts(b"3\n2\n", 3)
    distribution = profile_lib.TokenDistribution(np.array([5, 2]), np.array([1, 3]))
    assert distribution.coverage([0, 1, 2, 4, 99]).tolist() == pytest.approx([0, 5 / 11, 7 / 11, 1, 1])


def test_inspect_shows_boundaries_moments_and_the_idf_range(two_versions):
    arts, (_, _, values) = two_versions["old"]
    shown = _cli("inspect", arts.root)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert ", ".join(f"{b:.6g}" for b in arts.bin_boundaries("value")) in text
    mean, variance = arts.moments("scale")
    assert f"mean             {mean[0]:.6g}" in text and f"variance         {variance[0]:.6g}" in text
    documents = arts.manifest["features"]["text"]["state"]["documents"]
    idf = np.log1p(documents / (1.0 + arts.document_frequencies("text")))
    assert f"IDF              {idf.min():.6g} to {idf.max():.6g}   over {documents:,} documents" in text
    assert f"values' range    {values.min():.6g} to {values.max():.6g}" in text
    assert f"count at the cut {int(arts.token_counts('word')[-1]):>12,}" in text


@settings(max_examples=300)
@given(st.binary(max_size=200).map(lambda b: b.replace(b"a", b"\n").replace(b"b", b"\r")))
def test_fuzz_the_vocabulary_array_reads_a_file_as_the_line_reader_does(data):
    from prepro import vocab
    assert vocab.read_vocabulary_array(data, False).to_pylist() == vocab.read_vocabulary_file(data, False)


def test_the_vocabulary_array_puts_the_exceptions_back(tmp_path):
    rows = ["x\u2028y", "a", "p\x1cq", "a", "b", "x\u2028y", "c\rd", "a"]
    with open(tmp_path / "d.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"w": w}) + "\n" for w in rows)
    spec = spec_from_dict({"features": {"w": {"source": "w", "layer": "StringLookup"}}})
    run_analyze(spec, [str(tmp_path / "d.jsonl")], "jsonl", str(tmp_path / "arts"), golden_rows=0)
    arts = prepro.load(str(tmp_path / "arts"))
    assert len(arts.manifest["features"]["w"]["state"]["exceptions"]) == 3
    assert [t.decode("utf-8") for t in arts.vocabulary_array("w").to_pylist()] == arts.vocabulary("w")


@settings(max_examples=300)
@given(st.binary(max_size=200).map(lambda b: b.replace(b"a", b"\n").replace(b"b", b"\r")),
       st.integers(1, 64), st.lists(st.binary(max_size=4).map(lambda b: b.replace(b"a", b"\r")), max_size=6))
def test_fuzz_finding_tokens_block_by_block_agrees_with_the_line_reader(data, block, others):
    import pyarrow as pa
    from prepro import vocab
    lines = vocab.read_vocabulary_file(data, False)
    values = lines[::2] + others
    found, count = vocab.find_in_vocabulary_file((data[i:i + block] for i in range(0, len(data), block)),
                                                 pa.array(values, pa.large_binary()), False)
    assert count == len(lines)
    assert found.tolist() == [lines.index(v) if v in lines else -1 for v in values]


def test_vocabulary_positions_are_ranks_with_the_exceptions_and_need_no_whole_file(tmp_path):
    import tracemalloc
    import pyarrow as pa
    rows = ["x\u2028y", "a", "p\x1cq", "a", "b", "x\u2028y", "c\rd", "a"] + [f"t{i:07d}" for i in range(2_000_000)]
    with open(tmp_path / "d.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"w": w}) + "\n" for w in rows)
    spec = spec_from_dict({"features": {"w": {"source": "w", "layer": "StringLookup"}}})
    run_analyze(spec, [str(tmp_path / "d.jsonl")], "jsonl", str(tmp_path / "arts"), golden_rows=0)
    arts = prepro.load(str(tmp_path / "arts"))
    vocabulary = arts.vocabulary("w")
    asked = ["x\u2028y", "c\rd", "a", "nope", "t0000000", "t1999999", "", "p\x1cq", "a"]
    values = pa.array([v.encode("utf-8") for v in asked], pa.large_binary())
    expected = [vocabulary.index(v) if v in vocabulary else -1 for v in asked]
    file_bytes = arts.manifest["files"][arts.manifest["features"]["w"]["state"]["vocabulary_file"]]["bytes"]
    tracemalloc.start()
    try:
        assert arts.vocabulary_positions("w", values).tolist() == expected
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    from prepro.layers import _SCAN_BLOCK  # held: a bounded multiple of the scan's block, not of the file
    assert file_bytes > 16 * _SCAN_BLOCK > peak, (peak, file_bytes)


def test_vocabulary_positions_of_a_modified_file_name_its_checksum_not_a_parse_error(tmp_path):
    import pyarrow as pa
    from artifact_fixtures import state_path
    with open(tmp_path / "d.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"n": n}) + "\n" for n in [5, 5, 7, 9] * 3)
    spec = spec_from_dict({"features": {"n": {"source": "n", "layer": "IntegerLookup"}}})
    run_analyze(spec, [str(tmp_path / "d.jsonl")], "jsonl", str(tmp_path / "arts"), golden_rows=0)
    arts = prepro.load(str(tmp_path / "arts"))
    relpath = arts.manifest["features"]["n"]["state"]["vocabulary_file"]
    with open(state_path(arts.root, relpath), "r+b") as f:
        f.write(b"x")  # same size, not a number
    with pytest.raises(prepro.artifacts.ArtifactError, match="size or SHA-256 does not match"):
        arts.vocabulary_positions("n", pa.array([5], pa.int64()))


def _forged(source: str, destination, relpath: str, data: bytes, edit=lambda manifest: None) -> str:
    """A copy of the artifact with one listed file replaced and its checksum re-forged."""
    from artifact_fixtures import copy_artifact, read_manifest_json, state_path, write_manifest_json
    from prepro import artifacts
    root = copy_artifact(source, destination)
    with open(state_path(root, relpath), "wb") as f:
        f.write(data)
    manifest = read_manifest_json(root)
    manifest["files"][relpath] = artifacts.file_entry(data)
    edit(manifest)
    write_manifest_json(root, manifest)
    return root


def test_forged_profiles_with_matching_checksums_are_refused_naming_the_file(two_versions, tmp_path):
    arts, _ = two_versions["old"]
    profile, size = arts.manifest["features"]["word"]["profile"], arts.manifest["features"]["word"]["state"]["vocabulary_size"]
    distribution_file, counts_file = profile["count_distribution_file"], profile["counts_file"]
    rows = lambda n: lambda m: m["features"]["word"]["profile"].update(count_distribution_rows=n)  # noqa: E731
    cases = [
        # 4 * 2**62 occurrences wrap int64's sums around (a negative total).
        (distribution_file, b"4611686018427387904 4\n", rows(1), "more than 9007199254740992"),
        # Well-formed, but not the figures' tokens and occurrences (an empty one broke the plots).
        (distribution_file, b"1000000 1\n", rows(1), "1 distinct tokens with 1000000 occurrences, but"),
        (distribution_file, b"", rows(0), "0 distinct tokens with 0 occurrences, but"),
        # Counts the distribution does not hold: ascending, or each beyond MAX_COUNT.
        (counts_file, "".join(f"{i + 1}\n" for i in range(size)).encode(), None, "does not hold"),
        (counts_file, b"4611686018427387904\n" * size, None, "above 9007199254740992"),
    ]
    for i, (relpath, data, edit, words) in enumerate(cases):
        forged = prepro.load(_forged(arts.root, tmp_path / str(i), relpath, data, edit or (lambda m: None)))
        with pytest.raises(prepro.artifacts.ArtifactError, match=f"^{relpath}: malformed: .*{words}"):
            forged.token_counts("word")
        assert _cli("inspect", forged.root).returncode == 1
    # Finite quantiles beyond float32's range are none a job writes (such values are
    # infinite): they made the histogram's axis fail ('arange: cannot compute length').
    quantiles_file = arts.manifest["features"]["value"]["profile"]["quantiles_file"]
    forged = prepro.load(_forged(arts.root, tmp_path / "q", quantiles_file, b"-1e308\n" + b"1e308\n" * 1000))
    with pytest.raises(prepro.artifacts.ArtifactError, match=f"^{quantiles_file}: malformed: .*float32's range"):
        forged.report()


def _edited(source: str, destination, edit) -> str:
    from artifact_fixtures import copy_artifact, read_manifest_json, write_manifest_json
    root = copy_artifact(source, destination)
    manifest = read_manifest_json(root)
    edit(manifest["features"]["value"])
    write_manifest_json(root, manifest)
    return root


def _to_config_boundaries(entry):
    entry.update(config={"bin_boundaries": [1.0, 20.0]}, state={"boundaries": "config"})


@pytest.mark.parametrize("edit,words", [
    # A profile beside config boundaries made diff and the drift view fail (KeyError 'boundaries_file').
    (_to_config_boundaries, "a profile, but the boundaries come from the config"),
    # A null mean or variance with values counted failed inspect and report (TypeError).
    (lambda e: e["profile"]["moments"].update(mean=None), "null exactly when count is 0"),
    (lambda e: e["profile"]["moments"].update(variance=None), "null exactly when count is 0"),
    (lambda e: e["profile"]["moments"].update(count=0), "null exactly when count is 0"),
    # Python's JSON reader takes NaN; a NaN or negative variance made mean_shift NaN or inf.
    (lambda e: e["profile"]["moments"].update(variance=-4.0), "moments.variance: -4.0, not a finite number >= 0"),
    (lambda e: e["profile"]["moments"].update(mean=float("nan")), "moments.mean: nan, not a finite number"),
])
def test_a_quantile_profile_the_state_contradicts_is_refused_at_load(two_versions, tmp_path, edit, words):
    arts, _ = two_versions["old"]
    root = _edited(arts.root, tmp_path / "forged", edit)
    with pytest.raises(prepro.artifacts.ArtifactError, match=r"manifest\.json: \$\.features\.value\.profile"):
        prepro.load(root)
    with pytest.raises(prepro.artifacts.ArtifactError, match=words.replace(".", r"\.")):
        prepro.diff(arts, root)
    shown = _cli("inspect", root)
    assert shown.returncode == 1 and "Traceback" not in shown.stderr, shown.stderr


def test_the_gate_takes_signed_numbers_and_refuses_deep_nesting_as_a_usage_error():
    Gate = prepro.compare.Gate
    # '-1' was "neither a metric nor a number".
    assert Gate("psi > -1")({"psi": 0.0}) and Gate("-0.5 < psi <= +2")({"psi": 2}) and not Gate("psi < -1e-9")({"psi": 0})
    for bad in ("psi > --1", "psi > -True", "psi > -psi"):
        with pytest.raises(ValueError, match="neither a metric nor a number"):
            Gate(bad)
    assert Gate("not " * Gate.MAX_DEPTH + "psi > 0")({"psi": 1})
    # 1,000 nested nots exhausted the recursion ('maximum recursion depth exceeded', a
    # RuntimeError); 100,000 exhausted the parser (MemoryError).
    for deep in ("not " * 1000 + "psi > 0", "not " * 100_000 + "psi > 0",
                 "(psi > 0 or " * 40 + "psi > 0" + ")" * 40):
        with pytest.raises(ValueError, match="nested deeper than 32 levels"):
            Gate(deep)


def test_an_empty_vocabulary_reports_and_compares(two_versions, tmp_path):
    # The job never writes one ("no tokens to learn"), but a consistent hand-made one
    # loads: its report and diffs either way failed with IndexError, inspect and the
    # report's IDF range of a tf_idf one with numpy's 'zero-size array to reduction'.
    from artifact_fixtures import copy_artifact, read_manifest_json, state_path, write_manifest_json
    from prepro import artifacts
    arts, _ = two_versions["old"]
    root = copy_artifact(arts.root, tmp_path / "empty")
    manifest = read_manifest_json(root)
    for entry in (manifest["features"]["word"], manifest["features"]["text"]):  # text: tf_idf
        entry["state"].update(exceptions=[], vocabulary_size=0)
        entry["profile"]["count_distribution_rows"] = 0
        entry["figures"].update(top_tokens=[], distinct_tokens=0, tokens_kept=0, tokens_seen=0,
                                special_tokens_seen=0, coverage=0.0, below_thresholds=0)
        for relpath in (entry["state"]["vocabulary_file"], entry["profile"]["counts_file"],
                        entry["profile"]["count_distribution_file"], entry["state"].get("document_frequencies_file")):
            if relpath:
                open(state_path(root, relpath), "wb").close()
                manifest["files"][relpath] = artifacts.file_entry(b"")
    write_manifest_json(root, manifest)
    empty = prepro.load(root)
    assert empty.count_distribution("word").coverage([0, 5]).tolist() == [0, 0]
    assert 'data-feature="word"' in empty.report(base=arts).html and "word" in arts.report(base=empty).html
    grown, shrunk = prepro.diff(empty, arts).features["word"].metrics, prepro.diff(arts, empty).features["word"].metrics
    assert grown["added"] == len(arts.vocabulary("word")) and grown["oov_rate"] == 1.0
    assert shrunk["dropped"] == len(arts.vocabulary("word")) and shrunk["oov_rate"] == 0.0
    shown = _cli("inspect", root)
    assert shown.returncode == 0 and "IDF" not in shown.stdout.split("text  (")[1], shown.stderr


def test_an_empty_fail_on_is_a_usage_error_not_a_gate_that_never_fails(two_versions):
    # `--fail-on "$GATE"` with GATE unset passed every comparison (exit 0).
    old, new = two_versions["old"][0].root, two_versions["new"][0].root
    for empty in ("", "   "):
        refused = _cli("diff", old, new, "--fail-on", empty)
        assert refused.returncode == 2 and "not an expression" in refused.stderr, refused.stderr
        with pytest.raises(ValueError, match="not an expression"):
            prepro.compare.Gate(empty)


def test_forged_moments_and_a_missing_profile_are_refused(two_versions, tmp_path):
    from artifact_fixtures import copy_artifact, read_manifest_json, write_manifest_json
    arts, _ = two_versions["old"]
    mean_file = arts.manifest["features"]["scale"]["state"]["mean_file"]
    forged = prepro.load(_forged(arts.root, tmp_path / "nan", mean_file, b"nan\n"))
    with pytest.raises(prepro.artifacts.ArtifactError, match=f"^{mean_file}: malformed: .*not finite"):
        forged.moments("scale")  # a NaN mean would make mean_shift NaN and every gate false
    root = copy_artifact(arts.root, tmp_path / "no-profile")
    manifest = read_manifest_json(root)
    del manifest["features"]["word"]["profile"]
    write_manifest_json(root, manifest)
    with pytest.raises(prepro.artifacts.ArtifactError, match=r"\$\.features\.word: no profile, which format version 4"):
        prepro.load(root)


def test_vocabulary_positions_of_a_forged_vocabulary_name_the_file(two_versions, tmp_path):
    """Checksums re-forged to match: a vocabulary file with a line less than the
    manifest's vocabulary_size is refused naming the file, not looked up."""
    import pyarrow as pa
    arts, _ = two_versions["old"]
    relpath = arts.manifest["features"]["word"]["state"]["vocabulary_file"]
    data = arts.files.read(relpath)
    forged = prepro.load(_forged(arts.root, tmp_path / "short", relpath, data[:data.rindex(b"\n", 0, -1) + 1]))
    with pytest.raises(prepro.artifacts.ArtifactError, match=f"^{relpath}: malformed: .*vocabulary_size"):
        forged.vocabulary_positions("word", pa.array([b"w1"], pa.large_binary()))
