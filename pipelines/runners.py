"""Runner defaults: an embedded local runner that needs no download and no service.

The default is Beam's FnApiRunner. DirectRunner would first try to download the
Prism binary; FnApiRunner never does. Inputs under `IN_PROCESS_BYTES` run in-process
with large batches and every core tokenizing each batch in threads; larger ones use
one worker process per core. Measured on 2 cores: worker
processes cost 3-5 s to start, and a 263 MB job ran in 8.1-8.5 s in-process against
10.4-10.6 s with two workers.
Any other runner (DataflowRunner, FlinkRunner, SparkRunner, DaskRunner...) is chosen
with --runner and configured with Beam's own pipeline options. The runner is not
recorded in the manifest: artifacts are byte-identical whatever runs the job.
"""

import dataclasses
import errno
import multiprocessing
import re
from typing import List, Tuple

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

IN_PROCESS_BYTES = 1 << 30
IN_PROCESS_BATCH_BYTES = 64 << 20
LOCAL_NAMES = (None, "", "local", "FnApiRunner")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a job runs: the Beam runner and options, plus what prepro tunes to them."""
    runner: object
    options: PipelineOptions
    name: str
    single_process: bool   # one in-process worker: no small batches needed

    @property
    def batch_bytes(self) -> int:
        """Input bytes per batch: big in one process (fewer partial counts to merge),
        smaller with several workers (work to spread)."""
        return IN_PROCESS_BATCH_BYTES if self.single_process else 16 << 20

    @property
    def extract_threads(self) -> int:
        """Threads that tokenize and count one batch: every core when the job runs in
        one process, else one per worker (the runner already keeps the cores busy)."""
        return multiprocessing.cpu_count() if self.single_process else 1


def runner_name(pipeline_args: List[str]) -> str:
    name = PipelineOptions(pipeline_args).view_as(StandardOptions).runner
    return "FnApiRunner" if name in LOCAL_NAMES else name


def make_runner(pipeline_args: List[str], total_bytes: int = 0) -> Plan:
    options = PipelineOptions(pipeline_args)
    name = options.view_as(StandardOptions).runner
    if name == "DaskRunner":  # Beam knows it only by its full name
        from apache_beam.runners.dask.dask_runner import DaskRunner
        return Plan(DaskRunner(), options, name, single_process=False)
    if name not in LOCAL_NAMES:
        return Plan(name, options, name, single_process=False)
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    options.view_as(StandardOptions).runner = None
    direct = options.view_as(DirectOptions)
    # Beam defaults to 1 worker, so only an option absent from the command line is ours to set.
    if not _given(pipeline_args, "direct_num_workers"):
        in_memory = _given(pipeline_args, "direct_running_mode") and direct.direct_running_mode == "in_memory"
        direct.direct_num_workers = 1 if in_memory or total_bytes < IN_PROCESS_BYTES else multiprocessing.cpu_count()
    if not _given(pipeline_args, "direct_running_mode") and direct.direct_num_workers != 1:
        direct.direct_running_mode = "multi_processing"
    single = direct.direct_num_workers == 1 and direct.direct_running_mode == "in_memory"
    return Plan(FnApiRunner(), options, "FnApiRunner", single_process=single)


def _given(pipeline_args: List[str], option: str) -> bool:
    return any(a == f"--{option}" or a.startswith(f"--{option}=") for a in pipeline_args)


class WorkerLost(RuntimeError):
    """A Beam worker process died (killed, out of memory) while running the job."""


# Errors of the file systems prepro writes to, which a user can act on.
_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)
# How Beam reports a worker process that vanished: the Fn API channel to it closed.
_WORKER_LOST = ("Channel closed prematurely", "Socket closed", "StatusCode.UNAVAILABLE")


def unwrap_error(error: Exception) -> Exception:
    """Beam re-raises a step's error wrapped in its own, with " [while running '<step>']"
    appended (in another process: as text); recover the original, clear error: prepro's
    InputError or SpecError, a storage OSError (a full disk...), or a lost worker."""
    from pipelines.errors import InputError
    from prepro.spec import SpecError
    chain, seen = [], error
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    for kind in ((InputError, SpecError), OSError):
        found = [e for e in chain if isinstance(e, kind) and (kind is not OSError or e.errno in _STORAGE_ERRNOS)]
        if found:
            return found[-1]  # the innermost: the original, without Beam's step annotation
    text = "\n".join(str(e) for e in chain)
    match = re.search(r"(?:pipelines\.errors\.)?InputError: (.+?)(?: \[while running|\n|$)", text)
    if match:
        return InputError(match.group(1))
    match = re.search(r"\[Errno (\d+)\] ([^\n\[]+?)(?: \[while running|\n|$)", text)
    if match and int(match.group(1)) in _STORAGE_ERRNOS:
        return OSError(int(match.group(1)), match.group(2))
    if any(marker in text for marker in _WORKER_LOST):
        return WorkerLost("a Beam worker process died while running the job (killed, or out of memory?); "
                          "nothing was published. Re-run it; --verbose shows Beam's log")
    return error
