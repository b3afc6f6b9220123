"""What a user of the command line sees for bad input: exit code 1, nothing on stdout,
and one error line on stderr, `prepro analyze: error: ...`, naming feature, file and row
where they exist, after nothing but prepro's own progress lines; no traceback. Run as a real process (in-process capture would hide what
Beam logs on stderr: before, every error came with a Beam traceback there).
"""

import gzip
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from test_bad_input import assert_error, parquet_bytes, write

ROOT = Path(__file__).resolve().parents[1]
SPEC = """\
features:
  carrier: {source: carrier, layer: StringLookup}
  fare:    {source: fare,    layer: Normalization}
"""


def run_cli(tmp_path, inputs, fmt):
    spec = write(tmp_path / "spec.yaml", SPEC)
    argv = [sys.executable, "-m", "pipelines.cli", "analyze", "--spec", str(spec), "--format", fmt,
            "--output", str(tmp_path / "out"), "--golden-rows", "0"]
    for i in inputs:
        argv += ["--input", str(i)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)


def _truncated_gzip(tmp_path):
    body = b"carrier,fare\n" + b"".join(b"C%d,%d\n" % (i, i) for i in range(2000))
    return write(tmp_path / "rows.csv.gz", gzip.compress(body)[:1500]), "csv", None, None, "truncated gzip data"


def _fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe.csv")
    return tmp_path / "pipe.csv", "csv", None, None, "input is a FIFO"


def _parquet_struct(tmp_path):
    table = pa.table({"carrier": ["AA", "UA"], "fare": pa.array([None, {"a": 1.0}], pa.struct([("a", pa.float64())]))})
    return write(tmp_path / "rows.parquet", parquet_bytes(table)), "parquet", 2, "fare", "holds struct"


# One per stage: the input check before the job, a reader, a feature's extraction
# (~5 s each: a process that imports Beam).
@pytest.mark.parametrize("case", [_fifo, _truncated_gzip, _parquet_struct],
                         ids=["fifo", "truncated-gzip", "parquet-struct"])
def test_cli_bad_input_is_one_line_and_exit_1(tmp_path, case):
    path, fmt, row, feature, fragment = case(tmp_path)
    result = run_cli(tmp_path, [path], fmt)
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    *progress, error = result.stderr.splitlines()
    assert error.startswith("prepro analyze: error: "), result.stderr
    assert all(line.startswith("prepro: ") for line in progress) and "Traceback" not in result.stderr, result.stderr
    assert "error" not in "".join(progress) and result.stderr.endswith("\n")
    assert_error(error, path, row=row, feature=feature, fragments=[fragment])
    assert "[while running" not in result.stderr  # Beam's step suffix is not the user's business
    assert not (tmp_path / "out" / "manifest.json").exists()
