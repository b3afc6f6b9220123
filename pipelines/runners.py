"""Runner defaults: an embedded local runner that needs no download and no service.

The default is Beam's FnApiRunner. DirectRunner would first try to download the
Prism binary; FnApiRunner never does. Inputs under `IN_PROCESS_BYTES` run in-process
(worker processes cost ~5 s to start); larger ones use one worker process per core.
Any other runner (DataflowRunner, FlinkRunner, SparkRunner, DaskRunner...) is chosen
with --runner and configured with Beam's own pipeline options.
"""

import multiprocessing
import re
from typing import List, Tuple

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

IN_PROCESS_BYTES = 64 << 20
LOCAL_NAMES = (None, "", "local", "FnApiRunner")


def make_runner(pipeline_args: List[str], total_bytes: int = 0) -> Tuple[object, PipelineOptions, str]:
    options = PipelineOptions(pipeline_args)
    name = options.view_as(StandardOptions).runner
    if name not in LOCAL_NAMES:
        return name, options, name
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner
    options.view_as(StandardOptions).runner = None
    direct = options.view_as(DirectOptions)
    if direct.direct_num_workers is None:
        direct.direct_num_workers = 1 if total_bytes < IN_PROCESS_BYTES else multiprocessing.cpu_count()
    if direct.direct_running_mode in (None, "in_memory"):
        direct.direct_running_mode = "in_memory" if direct.direct_num_workers == 1 else "multi_processing"
    return FnApiRunner(), options, "FnApiRunner"


def unwrap_error(error: Exception) -> Exception:
    """Beam re-raises worker errors wrapped in its own; recover prepro's clear message."""
    from pipelines.errors import InputError
    from prepro.spec import SpecError
    seen = error
    while seen is not None:
        if isinstance(seen, (InputError, SpecError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    match = re.search(r"(?:pipelines\.errors\.)?InputError: (.+?)(?: \[while running|\n|$)", str(error))
    return InputError(match.group(1)) if match else error
