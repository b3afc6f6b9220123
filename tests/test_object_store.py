"""The job writing to an object store (objtest://, tests/object_store.py: gs://-like, no
directories) through Beam's FileSystems: the same bytes as on a local disk, part and
run files written and read through Beam's file objects, and no work directory left."""

import os

import pytest

import object_store  # noqa: F401  (registers the objtest:// Beam file system)
import prepro
from pipelines.analyze import run_analyze
from prepro import fs
from prepro.spec import load_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def files_under(folder):
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f), "rb").read()
            for d, _, names in os.walk(folder) for f in names}


def test_remote_output_gives_the_local_bytes_and_leaves_no_work_files(tmp_path):
    spec = load_spec(os.path.join(ROOT, "examples", "spec.yaml"))
    inputs = [os.path.join(ROOT, "examples", "data", "*.csv")]
    # 16 shards: every token feature's parts hold 16 record batches read one by one.
    run_analyze(spec, inputs, "csv", str(tmp_path / "local"), num_shards=16, golden_rows=0)
    remote = object_store.PREFIX + str(tmp_path / "remote")
    counters = {}
    run_analyze(spec, inputs, "csv", remote, num_shards=16, golden_rows=0, counters=counters)
    assert counters["part_files_written"] == 9
    assert files_under(tmp_path / "remote") == files_under(tmp_path / "local")  # no .prepro-work-* left
    arts = prepro.load(remote)  # manifest and checksums read through Beam
    assert arts.vocabulary("carrier") == prepro.load(str(tmp_path / "local")).vocabulary("carrier")


def test_delete_removes_every_object_under_a_prefix_and_nothing_else(tmp_path):
    for name in ("work/a", "work/sub/b", "workshop", "other"):
        os.makedirs(os.path.dirname(tmp_path / name), exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    base = object_store.PREFIX + str(tmp_path)
    assert not fs.exists(base + "/work") and fs.exists(base + "/other")  # no directories
    fs.delete([base + "/work", base + "/missing"])
    assert sorted(files_under(tmp_path)) == ["other", "workshop"]
    with pytest.raises(Exception):
        fs.read_bytes(base + "/work/a")
