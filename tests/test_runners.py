"""The same job on different engines gives byte-identical artifacts: Beam's FnApiRunner
in-process and with 2 worker processes, DaskRunner against a real dask.distributed
cluster (scheduler and 2 worker processes on loopback) started here, and Beam's
portable path (an embedded job service, SDK workers from an external worker pool)."""

import os

import pytest

from conftest import snapshot
from pipelines.analyze import run_analyze
from prepro.spec import load_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_fnapi_one_and_two_workers_and_dask_give_the_same_bytes(tmp_path, dask_cluster):
    spec = load_spec(os.path.join(ROOT, "examples", "spec.yaml"))
    inputs = [os.path.join(ROOT, "examples", "data", "*.csv")]
    runs = {
        "in_process": [],
        "two_workers": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        "dask": ["--runner", "DaskRunner", "--dask_client_address", dask_cluster.scheduler_address],
    }
    snapshots, counters = {}, {}
    for name, args in runs.items():
        counters[name] = {}
        manifest = run_analyze(spec, inputs, "csv", str(tmp_path / name), args, counters=counters[name])
        assert manifest["provenance"]["rows_read"] == 12000 and manifest["golden"]["rows"] == 16
        snapshots[name] = snapshot(tmp_path / name)
    # Progress counters (Beam metrics), summed over worker processes.
    size = sum(os.path.getsize(os.path.join(ROOT, "examples", "data", f"flights-{k}.csv")) for k in range(3))
    for name in ("in_process", "two_workers"):
        assert counters[name]["rows_read"] == 12000 and counters[name]["input_bytes_read"] == size
        assert counters[name]["read_tasks_done"] == 3 and counters[name]["features_finalized"] == 3
        assert counters[name]["part_files_written"] == 3 * 3  # per read task, per token feature
    # Beam 2.77's DaskRunner reports no metrics ({}); if it ever does, they must be exact.
    assert counters["dask"] in ({}, counters["in_process"])
    reference = snapshots["in_process"]
    # manifest; 3 vocabularies with counts and count distributions, boundaries and
    # quantiles, mean and variance; 2 golden files
    assert len(reference) == 16
    for name, files in snapshots.items():
        assert sorted(files) == sorted(reference), name
        for relpath in reference:
            assert files[relpath] == reference[relpath], f"{name}: {relpath} differs"


def test_local_default_is_in_process_below_1_gib_and_worker_processes_above():
    import multiprocessing
    from apache_beam.options.pipeline_options import DirectOptions
    from pipelines.runners import IN_PROCESS_BYTES, make_runner

    def direct(args, size):
        plan = make_runner(args, total_bytes=size)
        options = plan.options.view_as(DirectOptions)
        return plan.single_process, options.direct_num_workers, options.direct_running_mode

    assert direct([], IN_PROCESS_BYTES - 1) == (True, 1, "in_memory")
    assert direct([], IN_PROCESS_BYTES) == (multiprocessing.cpu_count() == 1, multiprocessing.cpu_count(),
                                            "multi_processing" if multiprocessing.cpu_count() > 1 else "in_memory")
    # What the user says wins, both ways.
    assert direct(["--direct_num_workers=1"], IN_PROCESS_BYTES) == (True, 1, "in_memory")
    assert direct(["--direct_running_mode=in_memory"], IN_PROCESS_BYTES) == (True, 1, "in_memory")
    assert direct(["--direct_num_workers", "2"], 10) == (False, 2, "multi_processing")
    assert direct(["--direct_num_workers=2", "--direct_running_mode=multi_threading"], 10)[1:] == (2, "multi_threading")


def test_portable_runner_with_separate_sdk_workers_gives_the_same_bytes(tmp_path, worker_pool):
    """Beam's portable path, as Flink, Spark and Dataflow run it: the job through an
    embedded job service (Fn API), the DoFns in SDK worker processes of an external
    worker pool. The CLI runs in its own process, with a timeout: Beam waits for workers
    that never start rather than failing."""
    import subprocess
    import sys
    endpoint, pool_log = worker_pool
    spec, data = os.path.join(ROOT, "examples", "spec.yaml"), os.path.join(ROOT, "examples", "data", "*.csv")
    base = [sys.executable, "-m", "pipelines.cli", "analyze", "--spec", spec, "--input", data, "--format", "csv"]
    runs = {"in_process": [], "portable": ["--runner", "PortableRunner", "--job_endpoint", "embed",
                                           "--environment_type", "EXTERNAL", "--environment_config", endpoint]}
    for name, args in runs.items():
        done = subprocess.run(base + ["--output", str(tmp_path / name)] + args, capture_output=True, text=True,
                              timeout=300, cwd=ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        # Progress reaches the driver from the SDK worker processes too (pipelines/progress.py).
        assert "prepro: reading 1.3 MB in 3 files" in done.stderr and " 100% 1.3/1.3 MB" in done.stderr, name
    assert "Starting worker" in pool_log.read_text(), "no SDK worker process was started by the pool"
    reference, portable = snapshot(tmp_path / "in_process"), snapshot(tmp_path / "portable")
    assert sorted(portable) == sorted(reference) and len(reference) == 16
    for relpath in reference:
        assert portable[relpath] == reference[relpath], f"portable: {relpath} differs"
