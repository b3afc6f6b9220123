"""The job's Keras helper: checks the spec against Keras while the Beam job runs, and
records the golden outputs at its end.

Importing TensorFlow and Keras takes ~5 s. When they are not loaded yet (the CLI), a
helper process imports them as the job starts, so the import overlaps the job:
1. it first builds and calls every feature's stock layer from a trivial state
   (`prepro.keras_check`): a config Keras refuses stops the job within seconds: the
   verdict is written to the work directory, which every read task polls
   (`Cancellation`), and the driver checks it again before anything is published;
2. at the end it records the golden outputs (`prepro.golden.record`), if asked to.
When TensorFlow is already loaded (a notebook, `prepro.adapt`), or a callable in the
spec is a Python object another process cannot import, both happen in this process:
the check before the job starts.

Keras's verdict is cached (`prepro.verdict_cache`: keyed by the spec and the installed
versions), and golden outputs are computed without TensorFlow where
`prepro.golden_numpy` covers every feature. When both hold, no helper starts and
nothing imports TensorFlow: a cached refusal fails the job before it starts, and the
golden rows are recorded here at the end (with Keras, in this process, only if the
evaluator declines the rows themselves, e.g. an OOV token in a tf_idf feature
of more than 65,536 tokens).
"""

import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from prepro import fs, golden, golden_numpy, verdict_cache
from prepro import spec as spec_lib
from prepro.spec import SpecError

CANCELLED = "cancelled.json"  # in the work directory: why the job must stop


class Cancellation:
    """Whether the job was cancelled: a file in its work directory, which every worker
    can see (the work directory is shared storage). Checked at most every `every`
    seconds, so a remote store is not asked once per batch."""

    def __init__(self, work_dir: str, every: float = 2.0):
        self.work_dir = work_dir
        self.path = fs.join(work_dir, CANCELLED)
        self._every = every
        self._last = 0.0

    def cancel(self, reason: str) -> None:
        fs.write_bytes(self.path, json.dumps({"reason": reason}).encode("utf-8"))

    def raise_if_cancelled(self) -> None:
        now = time.monotonic()
        if now - self._last < self._every:
            return
        self._last = now
        if fs.exists(self.path):
            raise SpecError(json.loads(fs.read_bytes(self.path))["reason"])


class KerasHelper:
    """Checks `spec` against Keras (now, or in a helper process) and records golden rows.

    Made before the output is touched: an in-process check raises its SpecError here. A
    helper process writes its refusal into the job's work directory itself (`cancel_into`
    says where), so the job stops even while this process is busy or stopped."""

    def __init__(self, spec: spec_lib.Spec, golden_rows: bool = True):
        self._spec = spec
        self._custom_objects = spec_lib.custom_objects(spec)
        self._process: Optional[subprocess.Popen] = None
        self._verdict: Optional[Dict[str, Any]] = verdict_cache.lookup(spec)
        if self._verdict is not None and (self._verdict["refused"] or not golden_rows
                                          or not golden_numpy.uncovered(spec)):
            self.verdict()  # a cached refusal: a SpecError before the job starts
            return  # nothing here needs TensorFlow: no helper
        if "tensorflow" in sys.modules or not spec_lib.callables_are_refs(spec):
            verdict_cache.check(spec, self._custom_objects)  # a SpecError before the job starts
            self._verdict = {"refused": None}
            return
        self._verdict = None
        env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self._process = subprocess.Popen([sys.executable, "-m", "pipelines.keras_helper"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        # Where NumPy records the golden rows, the helper has nothing to do after its
        # verdict: it exits then, so its TensorFlow (~0.8 GB) is not held through the job.
        self._send({"spec": spec.to_dict(), "refs": sorted(self._custom_objects),
                    "exit_after_verdict": not golden_rows or not golden_numpy.uncovered(spec)})

    def cancel_into(self, cancellation: Cancellation) -> None:
        """Tells the helper where a refusal cancels the job."""
        if self._process is not None:
            self._send({"work_dir": cancellation.work_dir})

    def verdict(self) -> None:
        """Waits for the check; a SpecError if Keras refuses the spec."""
        if self._verdict is None:
            try:
                self._verdict = self._receive()
            except RuntimeError as e:
                self._verdict = {"refused": f"could not check the spec against Keras: {e}"}
        if self._verdict["refused"]:
            raise SpecError(self._verdict["refused"])

    def record(self, root: str, manifest: Dict[str, Any], candidates: List[Dict[str, Any]],
               rows: int) -> Dict[str, Any]:
        """The manifest with golden rows recorded under `root` (see prepro.golden.record)."""
        self.verdict()
        if self._process is not None and not golden_numpy.uncovered(self._spec):
            # NumPy records them here: the helper's TensorFlow (~1 GB) is let go first
            # rather than loading a big vocabulary next to it (21.7M tokens: 3.0 GB).
            self.close()
        if self._process is None:
            return golden.record(root, manifest, candidates, rows, self._custom_objects)
        self._send({"root": root, "manifest": manifest, "candidates": candidates, "rows": rows})
        return self._receive()["manifest"]

    def close(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            for stream in (self._process.stdin, self._process.stdout, self._process.stderr):
                stream.close()
            self._process = None

    def _send(self, message: Dict[str, Any]) -> None:
        self._process.stdin.write((json.dumps(message) + "\n").encode("utf-8"))
        self._process.stdin.flush()

    def _receive(self) -> Dict[str, Any]:
        line = self._process.stdout.readline()
        if not line:
            self._process.wait()
            error = self._process.stderr.read().decode("utf-8", "replace").strip()
            raise RuntimeError(f"the Keras helper process failed: {error[-2000:] or 'no output'}")
        return json.loads(line)


def _serve() -> None:
    """The helper process: import Keras (meanwhile the job runs), check the spec, cancel the
    job if Keras refuses it, then record golden rows if asked."""
    request = json.loads(sys.stdin.readline())
    import keras  # noqa: F401  (imported while the job runs: golden rows need it even when the verdict is cached)
    custom_objects = {ref: spec_lib.resolve_callable(ref) for ref in request["refs"]}
    try:
        verdict_cache.check(spec_lib.spec_from_dict(request["spec"]), custom_objects)  # kept for the next job
        refusal = None
    except SpecError as e:
        refusal = str(e)
    line = sys.stdin.readline()  # where to cancel the job (sent once its work directory exists)
    if not line:
        return
    if refusal:
        Cancellation(json.loads(line)["work_dir"]).cancel(refusal)
    sys.stdout.write(json.dumps({"refused": refusal}) + "\n")
    sys.stdout.flush()
    if request.get("exit_after_verdict"):
        return  # (the verdict waits in the pipe for the driver)
    line = sys.stdin.readline()
    if not line:
        return  # no golden rows wanted
    job = json.loads(line)
    manifest = golden.record(job["root"], job["manifest"], job["candidates"], job["rows"], custom_objects)
    sys.stdout.write(json.dumps({"manifest": manifest}) + "\n")


if __name__ == "__main__":
    _serve()
