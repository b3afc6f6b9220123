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

Beam parses pipeline options leniently: an option it does not know (a typo such as
--direct_num_worker) is logged as "Discarding unparseable args" and the job runs with
defaults. `check_pipeline_options` makes that an error before anything runs, naming the
option and the closest valid one.
"""

import contextlib
import dataclasses
import difflib
import errno
import importlib
import io
import multiprocessing
import re
import sys
from typing import Dict, List, Optional

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, StandardOptions

IN_PROCESS_BYTES = 1 << 30
IN_PROCESS_BATCH_BYTES = 64 << 20
# In one process, batches counted whole, one per thread (extract.counts_whole_batches):
# small, so several are counted at once within one read task.
IN_PROCESS_WHOLE_BATCH_BYTES = 8 << 20
LOCAL_NAMES = (None, "", "local", "FnApiRunner")


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a job runs: the Beam runner and options, plus what prepro tunes to them."""
    runner: object
    options: PipelineOptions
    name: str
    single_process: bool   # one in-process worker: no small batches needed

    def batch_bytes(self, whole_batches: bool = False) -> int:
        """Input bytes per batch: big in one process (fewer partial counts to merge),
        smaller with several workers (work to spread), and small in one process whose
        threads count `whole_batches` (several batches of a read task at once)."""
        if not self.single_process:
            return 16 << 20
        return IN_PROCESS_WHOLE_BATCH_BYTES if whole_batches else IN_PROCESS_BATCH_BYTES

    @property
    def extract_threads(self) -> int:
        """Threads that tokenize and count one batch: every core when the job runs in
        one process, else one per worker (the runner already keeps the cores busy)."""
        return multiprocessing.cpu_count() if self.single_process else 1

    @property
    def workers_here(self) -> bool:
        """The workers run on this machine (a dask cluster's may), so a progress bar
        moves with them; a job service elsewhere moves it in steps (pipelines/progress.py)."""
        return workers_here(self.options)


def workers_here(options: PipelineOptions) -> bool:
    """See `Plan.workers_here`: FnApiRunner, DaskRunner, or the portable path through
    an embedded job service."""
    from apache_beam.options.pipeline_options import PortableOptions
    if options.view_as(StandardOptions).runner in LOCAL_NAMES + ("DaskRunner",):
        return True
    return options.view_as(PortableOptions).job_endpoint == "embed"


# Runners whose pipeline options live in their own module (Beam defines the options of
# Dataflow, Flink, Spark, Prism and portable runners in apache_beam.options.pipeline_options,
# which is always imported): module and options class. Their options count as valid
# only when that runner is chosen (Beam would ignore them on any other).
RUNNER_OPTIONS = {"DaskRunner": ("apache_beam.runners.dask.dask_runner", "DaskOptions")}


class BeamOptionError(ValueError):
    """A pipeline option Beam would discard or refuse; the message names it."""


def check_pipeline_options(pipeline_args: List[str], allow_unknown: bool = False) -> None:
    """Raises BeamOptionError for an option no Beam options class defines (with the
    closest valid one), an option of another runner than the chosen one, a stray
    argument, or a value Beam refuses. `allow_unknown` passes unknown names on to Beam
    (for options of runners whose modules prepro does not import); values are checked
    whatever it says."""
    if not pipeline_args:  # nothing to check: Beam's parsers of every option cost 0.1 s to build
        return
    parser = _parser()
    known, unknown = _parse_known(parser, pipeline_args)
    runner = "FnApiRunner" if known.runner in LOCAL_NAMES else str(known.runner).rsplit(".", 1)[-1]
    if unknown or runner in RUNNER_OPTIONS:  # runner modules are imported only when needed (~1 s)
        _import_runner_options()
        parser = _parser()
        known, unknown = _parse_known(parser, pipeline_args)
    if allow_unknown:
        return
    problems = []
    names = _unknown_names(unknown)
    if names:
        described = [_describe(token, _known_flags(parser)) for token in names]
        hint = "" if all("did you mean" in d for d in described) else \
            " (prepro analyze --allow-unknown-beam-options passes unknown options on to Beam)"
        problems.append(f"unknown Beam pipeline option{'s' if len(names) > 1 else ''} "
                        f"{'; '.join(described)}{hint}")
    given = {_name(a) for a in pipeline_args if a.startswith("--")}
    for other, options_class in sorted(_imported_runner_options().items()):
        flags = sorted(given & _flags(options_class))
        if other != runner and flags:
            problems.append(f"{', '.join(flags)} {'is an option' if len(flags) == 1 else 'are options'} of "
                            f"{other}, but the runner is {runner} (add --runner {other})")
    if problems:
        raise BeamOptionError("; ".join(problems))


def _import_runner_options() -> None:
    for module, _ in RUNNER_OPTIONS.values():
        try:
            importlib.import_module(module)
        except ImportError:  # the runner's dependencies are not installed: it cannot run either
            continue


def _imported_runner_options() -> Dict[str, type]:
    """Options classes of the runners in RUNNER_OPTIONS whose modules are imported."""
    return {runner: getattr(sys.modules[module], name) for runner, (module, name) in RUNNER_OPTIONS.items()
            if module in sys.modules}


def _parser(options_class: Optional[type] = None):
    """Beam's own parser of every imported options class (or only of `options_class`),
    taken through get_all_options's public `add_extra_args_fn` hook: Beam has no other
    public way to ask which options it knows."""
    captured = []
    options = PipelineOptions([])
    if options_class is None:
        options.get_all_options(add_extra_args_fn=captured.append)
    else:
        options.view_as(options_class).get_all_options(current_only=True, add_extra_args_fn=captured.append)
    return captured[0]


def _known_flags(parser) -> List[str]:
    # argparse has no public accessor for the option strings; Beam's own "did you mean"
    # warning (PipelineOptions._warn_on_unknown_options) reads them the same way.
    return sorted(flag for action in parser._actions for flag in action.option_strings if flag.startswith("--"))


def _flags(options_class: type) -> set:
    return set(_known_flags(_parser(options_class)))


def _parse_known(parser, pipeline_args: List[str]):
    """Beam's parse: (namespace, what it did not parse). A value it refuses (argparse
    prints the whole usage and exits) is a one-line BeamOptionError instead."""
    usage = io.StringIO()
    try:
        with contextlib.redirect_stderr(usage):
            return parser.parse_known_args(list(pipeline_args))
    except SystemExit:
        last = (usage.getvalue().strip().splitlines() or ["?"])[-1]
        raise BeamOptionError(f"invalid Beam pipeline option: {last.split('error: ', 1)[-1]}") from None


_NUMBER = re.compile(r"-?\d+(\.\d*)?([eE][-+]?\d+)?")


def _unknown_names(unknown: List[str]) -> List[str]:
    """The options (and stray arguments) among what Beam did not parse; a value right
    after an unknown `--option` (without '=') belongs to it."""
    out, after_option = [], False
    for token in unknown:
        if token.startswith("-") and not _NUMBER.fullmatch(token):
            out.append(token)
            after_option = "=" not in token
        else:
            if not after_option:
                out.append(token)
            after_option = False
    return out


def _name(token: str) -> str:
    return token.split("=", 1)[0]


def _describe(token: str, flags: List[str]) -> str:
    if not token.startswith("-"):
        return f"{token!r} (an argument that belongs to no option)"
    name = _name(token)
    if not token.startswith("--"):
        return f"{name} (Beam options start with '--')"
    close = difflib.get_close_matches(name, flags, n=1) or \
        difflib.get_close_matches(name.replace("-", "_"), flags, n=1)
    return name + (f" (did you mean {close[0]}?)" if close else "")


def runner_name(pipeline_args: List[str]) -> str:
    name = PipelineOptions(pipeline_args).view_as(StandardOptions).runner
    return "FnApiRunner" if name in LOCAL_NAMES else name


def make_runner(pipeline_args: List[str], total_bytes: int = 0, allow_unknown_options: bool = False) -> Plan:
    """The runner and options for `pipeline_args`, checked first (`check_pipeline_options`)."""
    check_pipeline_options(pipeline_args, allow_unknown_options)
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
            # prepro's own errors are re-raised by Beam as they are (`_tagged_with_step`):
            # the outermost is the most complete (a reader's error named with its features);
            # an OSError is re-raised as Beam's copy, so the innermost is the original.
            return found[0] if kind is not OSError else found[-1]
    # An error raised in a worker process reaches the driver only as text: the SDK
    # worker sends traceback.format_exc() in the Fn API's InstructionResponse.error and
    # FnApiRunner raises RuntimeError(that text). Beam 2.77 has no structured error
    # (nor a public API to get the original exception), so the message is recovered
    # from the text.
    text = "\n".join(str(e) for e in chain)
    match = re.search(r"(?:pipelines\.errors\.)?(?:InputError|SpecError): (.+?)(?: \[while running|\n|$)", text)
    if match:
        return (SpecError if "SpecError: " in match.group(0) else InputError)(match.group(1))
    match = re.search(r"\[Errno (\d+)\] ([^\n\[]+?)(?: \[while running|\n|$)", text)
    if match and int(match.group(1)) in _STORAGE_ERRNOS:
        return OSError(int(match.group(1)), match.group(2))
    if any(marker in text for marker in _WORKER_LOST):
        return WorkerLost("a Beam worker process died while running the job (killed, or out of memory?); "
                          "nothing was published. Re-run it; --verbose shows Beam's log")
    return error
