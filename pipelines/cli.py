"""The `prepro` command.

    prepro analyze --spec spec.yaml --input 'data/*.csv' --format csv --output artifacts/ [Beam options]
    prepro inspect artifacts/
    prepro report artifacts/ [--base OLD] --out report.html
    prepro diff OLD NEW [--json] [--fail-on 'psi>0.2 or oov_rate>0.05']
    prepro verify artifacts/ [--model serving.keras | --model saved_model_dir] [--features a,b]
    prepro --version

Exit status: 0 done (verify: every checked feature equal; diff: no feature meets
--fail-on), 1 an error (verify: a feature differs or a named one is missing; diff: a
feature meets --fail-on), 2 a usage error (verify and diff: also an artifact or model
that cannot be read), as `diff` and `cmp` do.
"""

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
import time
import warnings


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter
    parser = build_parser()
    args, beam_args = parser.parse_known_args(argv)
    if args.command != "analyze" and beam_args:
        parser.error(f"unrecognized arguments: {' '.join(beam_args)}")
    try:
        if args.command == "analyze":
            return _analyze(args, beam_args)
        if args.command == "verify":
            return _verify(args)
        if args.command == "report":
            return _report(args)
        if args.command == "diff":
            return _diff(args)
        return _inspect(args)
    except BrokenPipeError:
        # The reader went away (`prepro inspect ... | head`): stop quietly, as a shell tool
        # killed by SIGPIPE would (status 128 + 13), and keep Python's flush at exit silent.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, RuntimeError, OSError) as e:
        print(f"prepro {args.command}: error: {e}", file=sys.stderr)
        # verify's and diff's 1 means "they differ": anything that stops the check is 2.
        return 2 if args.command in ("verify", "diff") else 1


def build_parser() -> argparse.ArgumentParser:
    """The `prepro` command line (unknown `analyze` options go to Beam)."""
    parser = argparse.ArgumentParser(prog="prepro", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="print prepro's version and the Keras, TensorFlow and Beam it is built against")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="run the Beam job that computes layer state",
                       description="Unknown options are passed to Beam (e.g. --runner, "
                                   "--direct_num_workers, --project, --region, --temp_location).")
    a.add_argument("--spec", required=True, help="feature spec (YAML)")
    a.add_argument("--input", required=True, action="append",
                   help="file, glob or gs:// path; repeat for several")
    a.add_argument("--format", required=True, choices=("text", "csv", "jsonl", "parquet", "tfrecord"))
    a.add_argument("--output", required=True, help="artifact directory (local or gs://)")
    a.add_argument("--shards", type=int, default=None,
                   help="vocabulary shards (default: 1 for an in-process run under 256 MB of input, 64 MB with bigrams, else 16)")
    shown = a.add_mutually_exclusive_group()
    shown.add_argument("--verbose", action="store_true",
                       help="show Beam's own log (worker messages, tracebacks of failed steps) and dask's; by "
                            "default prepro prints its progress, a summary, or one error line")
    shown.add_argument("--quiet", action="store_true", help="print only the summary (or the error)")
    a.add_argument("--progress-interval", type=_seconds, default=5.0, metavar="SECONDS",
                   help="seconds between progress lines when stderr is not a terminal (default 5); a "
                        "terminal shows a bar")
    a.add_argument("--batch-bytes", type=_positive_int, default=None, metavar="BYTES",
                   help="input bytes per batch (default 64 MB in one process, 8 MB there without n-gram or "
                        "numeric features, else 16 MB); never changes "
                        "the result")
    a.add_argument("--allow-unknown-beam-options", action="store_true",
                   help="pass pipeline options Beam does not know on to it (by default an error naming "
                        "the closest valid one); for options of runners whose modules prepro does not import")
    a.add_argument("--golden-rows", type=int, default=16,
                   help="raw rows the artifacts carry with their expected outputs (0: none; computed "
                        "without TensorFlow where prepro.golden_numpy covers the spec, else with Keras: ~5 s)")
    a.add_argument("--keep-state", action="store_true",
                   help="also write every feature's mergeable state (every distinct token with its counts, "
                        "exact sums, exact values or the quantile sketch), for later updates with --base")
    a.add_argument("--base", metavar="ARTIFACTS",
                   help="update these artifacts (made with --keep-state) with the --input files: the result "
                        "is a full run's over the base's inputs and these, reading only these; keeps state")
    i = sub.add_parser("inspect", help="print the figures to check before training")
    i.add_argument("artifacts")
    i.add_argument("--top", type=int, default=10, help="top tokens to show per feature")
    i.add_argument("--json", action="store_true", help="print the manifest figures as JSON")
    r = sub.add_parser("report", help="write a self-contained HTML report (plots) of the artifacts",
                       description="One HTML file, no network: per feature the rank-frequency and coverage "
                                   "curves, top tokens and IDF, or the histogram with the boundaries, bucket "
                                   "occupancy and moments; with --base, what changed. From the recorded "
                                   "state only (the data is not read).")
    r.add_argument("artifacts")
    r.add_argument("--base", metavar="OLD", help="an older version of the artifacts: adds the drift view")
    r.add_argument("--out", required=True, help="the HTML file to write (local or gs://)")
    d = sub.add_parser("diff", help="what changed between two artifacts (tokens, OOV rate, divergence, PSI)",
                       description="Per feature: tokens added, dropped and moved, the share of NEW's token "
                                   "occurrences outside OLD's vocabulary (oov_rate), the Jensen-Shannon "
                                   "divergence (js), the mean's shift in OLD's standard deviations "
                                   "(mean_shift), the population stability index over OLD's buckets (psi). "
                                   "Exit 1 when --fail-on holds for a feature, 2 when it cannot compare.")
    d.add_argument("old")
    d.add_argument("new")
    d.add_argument("--json", action="store_true", help="print the comparison as JSON")
    d.add_argument("--fail-on", metavar="EXPR",
                   help="exit 1 if this holds for any feature, e.g. 'psi>0.2 or oov_rate>0.05'; metrics: "
                        "oov_rate, js, added, dropped, moved, psi, mean_shift, missing_rate")
    v = sub.add_parser("verify", help="check layers or a saved model against the artifacts' golden rows",
                       description="Without --model: layers built from the artifacts in this environment. "
                                   "With a .keras model: its layers of the same names. With a SavedModel "
                                   "directory: the outputs of its serving signature named like features, "
                                   "called with the raw columns it names (export "
                                   "Preprocessing.preprocessing_model()). Features a model lacks are "
                                   "listed, not checked. Exit 0: all checked features equal; 1: a "
                                   "feature differs, or one named with --features is not in the model; "
                                   "2: a usage error, or a model or artifact that cannot be checked.")
    v.add_argument("artifacts")
    v.add_argument("--model", help=".keras file or SavedModel directory")
    v.add_argument("--features", type=_feature_list, metavar="A,B",
                   help="check only these features (comma-separated); each must be in the model")
    v.add_argument("--max-ulps", type=int, default=0,
                   help="float outputs may differ by this many units in the last place (default 0: "
                        "bit for bit); XLA under JAX rounds Normalization differently by 1")
    return parser


def _analyze(args, beam_args) -> int:
    notes = logging.getLogger("prepro.progress")  # the output lock's notes and warnings, on stderr
    if not notes.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("prepro: %(asctime)s %(message)s", "%H:%M:%S"))
        notes.addHandler(handler)
        notes.propagate = False
    notes.setLevel(logging.WARNING if args.quiet else logging.INFO)
    if not args.verbose:
        # Beam logs a failed step's traceback (and every worker's) before the job ends, and
        # its gRPC threads print theirs when a worker dies; the CLI reports the error
        # itself, in one line naming feature, file and row.
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
        threading.excepthook = _quiet_beam_threads
    from prepro.spec import load_spec
    spec = load_spec(args.spec)
    from pipelines.analyze import run_analyze
    start = time.time()
    counters = {}
    with contextlib.nullcontext() if args.verbose else _quiet_dask():
        manifest = run_analyze(spec, args.input, args.format, args.output, beam_args,
                               num_shards=args.shards, golden_rows=args.golden_rows, counters=counters,
                               allow_unknown_beam_options=args.allow_unknown_beam_options,
                               keep_state=args.keep_state, base=args.base, batch_bytes=args.batch_bytes,
                               progress=_progress_display(args, beam_args))
    from pipelines.runners import runner_name
    prov = manifest["provenance"]
    size = sum(i["bytes"] for i in prov["inputs"])
    seconds = time.time() - start
    golden = manifest.get("golden", {}).get("rows", 0)
    print(f"prepro analyze: {prov['rows_read']} rows, {size / 1e6:.1f} MB from {len(prov['inputs'])} file(s)"
          + (f" in {counters['read_tasks_done']} read tasks" if "read_tasks_done" in counters else "")
          + f", {len(manifest['features'])} feature(s), {golden} golden rows; {seconds:.1f} s "
          f"({size / 1e6 / max(seconds, 1e-9):.1f} MB/s) on {runner_name(beam_args)} -> {args.output}")
    lineage = prov.get("lineage", [])
    if lineage:
        print(f"prepro analyze: updated {args.base} (step {len(lineage) + 1}; "
              f"{sum(step['rows_read'] for step in lineage)} rows before, {prov['rows_read']} new)")
    if "kept_state" in manifest:
        print(f"prepro analyze: kept state {_kept_bytes(manifest) / 1e6:.1f} MB: "
              + ", ".join(_kept_text(name, entry["state"]) for name, entry in sorted(manifest["features"].items())
                          if _kept_text(name, entry["state"])))
    return 0


def _progress_display(args, beam_args):
    """A bar on a terminal, plain lines elsewhere (and under --verbose: Beam's log is
    interleaved), nothing with --quiet."""
    if args.quiet:
        return None
    from apache_beam.options.pipeline_options import PipelineOptions
    from pipelines.progress import display_for
    from pipelines.runners import workers_here
    return display_for(interval=args.progress_interval, plain=args.verbose,
                       remote=not workers_here(PipelineOptions(beam_args)))


@contextlib.contextmanager
def _quiet_dask():
    """dask.distributed logs at INFO to stderr from its scheduler, nanny and worker
    processes (a LocalCluster DaskRunner starts when no --dask_client_address is given,
    in this process and in child processes), and warns when its dashboard's port is
    taken: only its warnings and errors in the log, unless --verbose. The variable
    reaches the child processes (they read dask's config from it); all of it is undone
    when the job ends, so a caller of `main` keeps its own environment."""
    key, logger = "DASK_LOGGING__DISTRIBUTED", logging.getLogger("distributed")
    saved_value, saved_level = os.environ.get(key), logger.level
    os.environ.setdefault(key, "warning")
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"distributed(\.|$)")
            yield
    finally:
        logger.setLevel(saved_level)
        if saved_value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = saved_value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _kept_bytes(manifest) -> int:
    from prepro.state_files import kept_state_files
    return sum(manifest["files"][relpath]["bytes"] for relpath in kept_state_files(manifest))


def _kept_text(name: str, state) -> str:
    if "token_state_file" in state:
        return f"{name} {state['token_state_rows']} tokens"
    if "moments_state_file" in state:
        return f"{name} exact sums"
    if "quantile_state_file" in state:
        return f"{name} {state['quantile_state_rows']} distinct values"
    if "quantile_sketch_file" in state:
        return f"{name} quantile sketch"
    return ""


def _quiet_beam_threads(args) -> None:
    """Exceptions of Beam's background threads stay quiet (the job's error says what
    failed); prepro's own threads still report theirs."""
    if args.thread is not None and args.thread.name.startswith("prepro"):
        threading.__excepthook__(args)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (callers may redirect it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def _verify(args) -> int:
    import prepro
    from prepro.golden import verify
    report = verify(prepro.load(args.artifacts), args.model, args.features, max_ulps=args.max_ulps)
    print("\n".join(report.lines()))
    print(_verdict(report))
    return 0 if report.ok else 1


def _verdict(report) -> str:
    counts = f"{len(report.differences)} checked" + (f", {len(report.absent)} not in the model" if report.absent else "")
    if report.ok:
        return f"verify: OK ({counts})"
    reasons = (["outputs differ from the golden rows"] if any(report.differences.values()) else []) + \
        ([f"named features not in the model: {', '.join(report.missing)}"] if report.missing else [])
    return f"verify: FAILED: {'; '.join(reasons)} ({counts})"


def _report(args) -> int:
    import prepro
    arts = prepro.load(args.artifacts)
    result = arts.report(args.out, base=args.base)
    print(f"prepro report: {args.out}: {len(result.html.encode('utf-8')) / 1e3:,.0f} kB, "
          f"{len(result.features)} feature(s){f', against {args.base}' if args.base else ''}; "
          f"{result.seconds:.1f} s")
    return 0


def _diff(args) -> int:
    import prepro
    from prepro.compare import Gate
    # A bad expression stops before any reading; an empty one too (an unset "$GATE" never fails).
    gate = Gate(args.fail_on) if args.fail_on is not None else None
    comparison = prepro.diff(args.old, args.new)
    print(comparison.to_json() if args.json else "\n".join(comparison.lines()))
    failing = [name for name, f in sorted(comparison.features.items()) if gate(f.metrics)] if gate else []
    if failing:
        print(f"prepro diff: --fail-on {args.fail_on!r} holds for {', '.join(failing)}", file=sys.stderr)
        return 1
    return 0


class _Version(argparse.Action):
    """--version, reading the installed versions only when asked."""

    def __call__(self, parser, namespace, values, option_string=None):
        from prepro.versions import version_lines
        print("\n".join(version_lines()))
        parser.exit()


def _feature_list(text: str):
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected feature names separated by commas")
    return names


def _inspect(args) -> int:
    import prepro
    from prepro.artifacts import one_line
    # Validated against the schema and every listed file checked before a word is printed.
    arts = prepro.load(args.artifacts)
    manifest = arts.manifest
    if args.json:
        print(json.dumps({n: f["figures"] for n, f in manifest["features"].items()}, indent=1))
        return 0
    prov = manifest["provenance"]
    where = f" in {manifest['state_dir']}" if "state_dir" in manifest else ""
    print(one_line(f"{args.artifacts}: {prov['rows_read']} rows from {len(prov['inputs'])} {prov['input_format']} "
                   f"file(s); format v{manifest['format_version']}; {len(manifest['files'])} files{where}, "
                   f"checksums OK"))
    for name, f in sorted(manifest["features"].items()):
        print()
        print(one_line(f"{name}  ({f['layer']} <- {_sources(f['source'])})"))
        for line in _feature_lines(arts, name, f, args.top):
            print("  " + one_line(line))
    return 0


def _sources(source) -> str:
    return f"column {source!r}" if isinstance(source, str) else f"columns {', '.join(map(repr, source))}"


SHOWN_VALUES = 12  # boundaries, means and variances printed per feature


def _values(values) -> str:
    values = [float(v) for v in values]
    shown = ", ".join(f"{v:.6g}" for v in values[:SHOWN_VALUES])
    return shown + (f", ... ({len(values):,} in all)" if len(values) > SHOWN_VALUES else "")


def _feature_lines(arts, name: str, f, top: int):
    g, state, layer = f["figures"], f["state"], f["layer"]
    yield f"rows read        {g['rows']:>12,}   missing {g['missing']:,}"
    if layer in ("Normalization", "Discretization"):
        yield (f"values           {g['values']:>12,}   NaN skipped {g['nan']:,}   infinite {g['infinite']:,}"
               f"   zero weight {g['zero_weight']:,}")
        if layer == "Normalization":
            mean, variance = arts.moments(name)
            yield f"moments          over {state['count']:,} observations, kept axes' shape {state['shape']}"
            yield f"mean             {_values(mean.ravel())}"
            yield f"variance         {_values(variance.ravel())}"
        elif "boundaries_file" in state:
            yield (f"boundaries       {state['num_boundaries']:>12,}   ({state['distinct_boundaries']:,} distinct; "
                   f"{state['quantiles']}, rank error <= {state['rank_error_bound']})")
            yield f"                 {_values(arts.bin_boundaries(name))}"
            if "profile" in f and f["profile"]["moments"]["count"]:
                m, q = f["profile"]["moments"], arts.quantile_profile(name).values
                yield (f"values' range    {q[0]:.6g} to {q[-1]:.6g}   mean {m['mean']:.6g}   "
                       f"std {m['variance'] ** 0.5:.6g} (finite values)")
        else:
            yield f"boundaries       {_values(f['config']['bin_boundaries'])} (from the config)"
        return
    yield (f"values           {g['values']:>12,}   invalid UTF-8 replaced {g['invalid_utf8_replaced']:,}"
           f" skipped {g['invalid_utf8_skipped']:,}")
    if layer in ("Hashing", "CategoryEncoding"):
        return
    yield f"tokens seen      {g['tokens_seen']:>12,}   (mask/OOV tokens among them: {g['special_tokens_seen']:,})"
    yield f"distinct tokens  {g['distinct_tokens']:>12,}"
    yield f"tokens kept      {g['tokens_kept']:>12,}   (+{state['token_start']} reserved indices)"
    yield f"coverage         {g['coverage']:>12.2%}   of token occurrences are in the vocabulary"
    if "profile" in f and g["tokens_kept"]:
        yield f"count at the cut {int(arts.token_counts(name)[-1]):>12,}   (the last kept token's)"
    if "document_frequencies_file" in state and state["vocabulary_size"]:
        import numpy as np
        frequencies = arts.document_frequencies(name)
        idf = np.log1p(state["documents"] / (1.0 + frequencies))  # Keras's weight, log(1 + N / (1 + df))
        yield f"IDF              {idf.min():.6g} to {idf.max():.6g}   over {state['documents']:,} documents"
    yield "top tokens       " + ", ".join(f"{t!r} {c:,}" for t, c in g["top_tokens"][:top])


if __name__ == "__main__":
    sys.exit(main())
