"""gs:// for real: the job and `prepro.load` against a Cloud Storage API server on
loopback (fake-gcs-server, `gcs_job_emulator` in conftest.py), through Beam's own GCS file
system: inputs read from gs://, the work directory and the published artifact on gs://,
and layers built from the bucket on a host that only has the bucket."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import prepro
from analyze_features_job import LIST_SPEC
from conftest import snapshot
from pipelines import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = [os.path.join(ROOT, "examples", "data", f"flights-{k}.csv") for k in range(3)]


def _bucket():
    from google.cloud import storage
    return storage.Client.create_anonymous_client().bucket("bucket")


def _objects(prefix):
    """{path under prefix: bytes} of every object under gs://bucket/<prefix>/."""
    return {b.name[len(prefix) + 1:]: b.download_as_bytes() for b in _bucket().list_blobs(prefix=prefix + "/")}


@pytest.fixture(scope="module")
def on_gcs(gcs_job_emulator, tmp_path_factory):
    """The bundled example analyzed from gs:// into gs:// by the CLI in its own process,
    and locally, for comparison."""
    for path in DATA:
        _bucket().blob(f"data/{os.path.basename(path)}").upload_from_filename(path)
    local = str(tmp_path_factory.mktemp("local") / "arts")
    assert cli.main(["analyze", "--spec", f"{ROOT}/examples/spec.yaml", "--input", f"{ROOT}/examples/data/*.csv",
                     "--format", "csv",
                     "--output", local]) == 0
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "analyze", "--spec", f"{ROOT}/examples/spec.yaml",
                           "--input", f"{gcs_job_emulator}/data/*.csv", "--format", "csv",
                           "--output", f"{gcs_job_emulator}/arts/"], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    print(f"gs:// job: {seconds:.1f} s")
    return {"local": local, "stderr": done.stderr, "seconds": seconds}


def test_the_job_reads_and_publishes_on_gcs_the_same_state_as_locally(on_gcs, gcs_job_emulator):
    published = _objects("arts")
    manifest = json.loads(published.pop("manifest.json"))
    local = snapshot(on_gcs["local"])
    local_manifest = json.loads(local.pop("manifest.json"))
    assert published == local  # every state file and golden file, byte for byte
    assert manifest["features"] == local_manifest["features"] and manifest["files"] == local_manifest["files"]
    assert [i["path"] for i in manifest["provenance"]["inputs"]] == \
        [f"{gcs_job_emulator}/data/flights-{k}.csv" for k in range(3)]
    assert not any(name.startswith(".prepro-work-") for name in published), "the work directory was left"
    # No process spent its time searching for credentials the emulator does not need.
    assert "Unable to find default credentials" not in on_gcs["stderr"]


def test_layers_load_from_the_bucket_on_a_host_with_only_the_bucket(on_gcs, gcs_job_emulator, tmp_path):
    """A training host: a fresh process, no local artifact, an empty cache."""
    script = (
        "import json, sys, numpy as np, prepro\n"
        f"arts = prepro.load({gcs_job_emulator + '/arts'!r})\n"
        "out = {}\n"
        "for name in sorted(arts.manifest['features']):\n"
        "    layer = arts.layer(name)\n"
        "    if hasattr(layer, 'get_vocabulary'):\n"
        "        out[name] = layer.get_vocabulary()\n"
        "out['carrier_ids'] = np.asarray(arts.layer('carrier')(np.array(['AA', 'UA', 'nope']))).tolist()\n"
        "print(json.dumps(out, default=int))\n")
    env = {**os.environ, "PREPRO_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(tmp_path),
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    local = prepro.load(on_gcs["local"])
    for name in got:
        if name != "carrier_ids":
            assert got[name] == local.layer(name).get_vocabulary(), name
    want = np.asarray(local.layer("carrier")(np.array(["AA", "UA", "nope"]))).tolist()
    assert got["carrier_ids"] == want
    cached = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "cache") for f in fs]
    assert cached and all(f.endswith("vocabulary.txt") for f in cached)  # TensorFlow read local copies


def test_a_tampered_object_in_the_bucket_is_refused(on_gcs, gcs_job_emulator, tmp_path, monkeypatch):
    import prepro.artifacts
    monkeypatch.setenv("PREPRO_CACHE_DIR", str(tmp_path / "cache"))
    manifest = json.loads(_objects("arts")["manifest.json"])
    relpath = manifest["features"]["carrier"]["state"]["vocabulary_file"]
    blob = _bucket().blob(f"arts/{manifest['state_dir']}/{relpath}")
    original = blob.download_as_bytes()
    try:
        blob.upload_from_string(original.replace(b"AA", b"ZZ"))
        with pytest.raises(prepro.artifacts.ArtifactError, match="does not match the manifest"):
            prepro.load(f"{gcs_job_emulator}/arts", verify=False).layer("carrier")
        assert not os.path.exists(tmp_path / "cache" / manifest["files"][relpath]["sha256"] / "vocabulary.txt")
    finally:
        blob.upload_from_string(original)


def test_a_users_pipeline_publishes_to_gcs(gcs_job_emulator):
    output = f"{gcs_job_emulator}/pipeline-arts"
    manifest = _run_to_gcs(output)
    assert sorted(manifest["features"]) == ["carrier", "tags"]
    assert not any(n.startswith(".prepro-job-") for n in _objects("pipeline-arts")), "the work directory was left"
    assert prepro.load(output).layer("tags").get_vocabulary()[0] == "[UNK]"


def _run_to_gcs(output):
    import apache_beam as beam
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    from analyze_features_job import bigquery_rows
    from pipelines import AnalyzeFeatures
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = p | beam.Create(bigquery_rows(200)) | AnalyzeFeatures(LIST_SPEC, output)
    return prepro.load(output).manifest
