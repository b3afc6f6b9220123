"""The artifact directory: manifest contents, checksums, format version, atomic
publishing, and callables that are named, never stored. (Locking, leftovers and faults:
tests/test_publish.py and tests/test_faults.py.)"""

import json
import os
import re

import pytest

import prepro
from pipelines.analyze import run_analyze
from pipelines.errors import InputError
from prepro.artifacts import ArtifactError
from prepro.spec import spec_from_dict

SPEC = {"features": {
    "carrier": {"source": "carrier", "layer": "StringLookup"},
    "flight": {"source": "flight", "layer": "IntegerLookup", "config": {"max_tokens": 3}},
}}


def write_csv(path, rows):
    path.write_text("carrier,flight\n" + "".join(f"{c},{f}\n" for c, f in rows))
    return str(path)


def state(artifact):
    """The directory holding the published artifact's state files."""
    return artifact / json.loads((artifact / "manifest.json").read_text())["state_dir"]


@pytest.fixture
def artifact(tmp_path):
    data = write_csv(tmp_path / "flights.csv", [("AA", 1), ("UA", 2), ("UA", 2), ("DL", 3), ("UA", 1)])
    out = tmp_path / "out"
    run_analyze(spec_from_dict(SPEC), [data], "csv", str(out))
    return out


def test_manifest_records_format_spec_figures_files_and_provenance(artifact):
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["format"] == "prepro.artifacts" and manifest["format_version"] == 4
    assert re.fullmatch(r"state-[0-9a-f]{16}", manifest["state_dir"])
    # Each feature's config is written once, in its entry (format version 3).
    assert "spec" not in manifest and manifest["features"]["flight"]["config"]["max_tokens"] == 3
    figures = manifest["features"]["carrier"]["figures"]
    assert figures["rows"] == 5 and figures["tokens_kept"] == 3
    # Document frequencies are written only for tf_idf or a df threshold; every
    # vocabulary has its counts and count distribution (the profile, version 4).
    assert set(manifest["files"]) == {f"{name}/{file}" for name in ("carrier", "flight")
                                      for file in ("vocabulary.txt", "counts.txt", "count_distribution.txt")} | {
        "golden/rows.json", "golden/expected.json"}
    assert manifest["golden"]["rows"] == 4  # 5 rows, one of them twice: golden rows are distinct
    for relpath, entry in manifest["files"].items():
        assert entry["bytes"] == os.path.getsize(state(artifact) / relpath)
        assert len(entry["sha256"]) == 64
    provenance = manifest["provenance"]
    assert provenance["rows_read"] == 5 and "runner" not in provenance  # same bytes on any runner
    assert [i["path"] for i in provenance["inputs"]] == [str(artifact.parent / "flights.csv")]
    assert {"apache-beam", "pyarrow"} <= set(provenance["versions"])
    # Keras's file format: one token per line; the flight cut keeps 2 of 3 (max_tokens 3).
    assert (state(artifact) / "flight" / "vocabulary.txt").read_text() == "2\n1\n"


def test_directory_without_manifest_is_not_an_artifact(artifact):
    (artifact / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        prepro.load(str(artifact))


def test_modified_state_file_is_refused(artifact):
    (state(artifact) / "carrier" / "vocabulary.txt").write_text("UA\nAA\nXX\n")
    with pytest.raises(ArtifactError, match="SHA-256") as info:
        prepro.load(str(artifact))
    assert "carrier/vocabulary.txt" in str(info.value)


def test_missing_state_file_is_refused(artifact):
    (state(artifact) / "flight" / "vocabulary.txt").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        prepro.load(str(artifact))


def test_unknown_format_version_is_refused(artifact):
    path = artifact / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = 99
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="format version 99"):
        prepro.load(str(artifact))


def test_rerun_replaces_the_artifact(artifact, tmp_path):
    before = prepro.load(str(artifact))
    data = write_csv(tmp_path / "flights.csv", [("B6", 7), ("B6", 7), ("WN", 8)])
    run_analyze(spec_from_dict(SPEC), [data], "csv", str(artifact))
    arts = prepro.load(str(artifact))
    assert arts.vocabulary("carrier") == ["B6", "WN"]
    assert arts.vocabulary("flight") == [7, 8]
    # The replaced artifact's files stay until the next job starts: a training job that
    # loaded it just before the re-run still builds its layers from what it verified.
    assert before.vocabulary("carrier") == ["UA", "DL", "AA"]
    assert sorted(os.listdir(artifact)) == sorted(["manifest.json", arts.manifest["state_dir"],
                                                   before.manifest["state_dir"]])


def test_failed_run_leaves_the_previous_artifact_and_no_work_files(artifact, tmp_path):
    manifest = (artifact / "manifest.json").read_bytes()
    listing = sorted(os.listdir(artifact))
    bad = write_csv(tmp_path / "bad.csv", [("AA", 1), ("UA", "2x")])
    with pytest.raises(InputError):
        run_analyze(spec_from_dict(SPEC), [bad], "csv", str(artifact))
    assert (artifact / "manifest.json").read_bytes() == manifest
    assert sorted(os.listdir(artifact)) == listing  # no work directory, no lock, nothing new
    assert prepro.load(str(artifact)).vocabulary("carrier") == ["UA", "DL", "AA"]


def test_successful_run_leaves_no_work_files(artifact):
    assert sorted(os.listdir(artifact)) == sorted(["manifest.json", state(artifact).name])
    assert sorted(os.listdir(state(artifact))) == ["carrier", "flight", "golden"]


def test_callable_is_recorded_by_name_and_must_be_passed_back(tmp_path):
    from tests.helpers_callables import my_standardize
    data = tmp_path / "reviews.txt"
    data.write_text("Good<br />FLIGHT\ngood crew\n")
    spec = spec_from_dict({"features": {"review": {
        "source": "text", "layer": "TextVectorization",
        "config": {"standardize": "tests.helpers_callables:my_standardize"}}}})
    out = tmp_path / "out"
    run_analyze(spec, [str(data)], "text", str(out))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["features"]["review"]["config"]["standardize"] == \
        "tests.helpers_callables:my_standardize"
    with pytest.raises(ValueError, match="custom_objects"):
        prepro.load(str(out)).layer("review")
    layer = prepro.load(str(out), custom_objects={"my_standardize": my_standardize}).layer("review")
    import keras
    adapted = keras.layers.TextVectorization(standardize=my_standardize)
    adapted.adapt(["Good<br />FLIGHT", "good crew"])
    assert layer.get_vocabulary() == adapted.get_vocabulary() == ["", "[UNK]", "good", "flight", "crew"]


def test_callable_that_does_not_import_names_the_feature(tmp_path):
    from prepro.spec import SpecError
    data = tmp_path / "reviews.txt"
    data.write_text("good\n")
    spec = spec_from_dict({"features": {"review": {
        "source": "text", "layer": "TextVectorization",
        "config": {"split": "tests.helpers_callables:no_such_function"}}}})
    with pytest.raises(SpecError, match="feature 'review': split: cannot import"):
        run_analyze(spec, [str(data)], "text", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("module, name", [("artifacts", "MANIFEST_SCHEMA"), ("golden", "ROWS_SCHEMA"),
                                          ("golden", "EXPECTED_SCHEMA")])
def test_the_json_schemas_are_valid_draft_2020_12(module, name):
    """The validators are built without the meta-schema check (a constant schema need not
    be checked by every process): it is made here."""
    import importlib
    import jsonschema
    jsonschema.Draft202012Validator.check_schema(getattr(importlib.import_module(f"prepro.{module}"), name))
