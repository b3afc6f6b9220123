"""Benchmark: prepro's analyze job vs Keras adapt(), TensorFlow Transform and single-machine peers.

    python -m bench.run                                   # every workload, full size
    python -m bench.run --workloads ngram-tfidf --docs-scale 0.05 --skip tft
    python -m bench.run --workloads unigram --skip adapt,tft --sizes 1000000,4000000   # past start-up

For each workload one generated input (cached in --data-dir) is given to each tool,
every tool in its own fresh process under `bench.measure`:
- prepro: the `prepro analyze` CLI as a user runs it; wall time includes start-up;
- adapt:  the adapt() calls alone, then a check of prepro's artifacts against them:
          text workloads (`bench.adapt_job`): `layer.adapt(docs)`, then parity of the
          layer built from prepro's artifacts; `numeric` (`bench.numeric_adapt_job`):
          adapt() on a tf.data.Dataset per layer, then the worst rank error of both
          tools' boundaries against exact quantiles, and their moments' errors;
- tft:    tft_beam.AnalyzeDataset on the local FnApiRunner (`bench.tft_job`), the
          pipeline run only. Off by default for `unigram` (slow; --tft-on unigram);
          not wired for `numeric`.
- polars, duckdb, spark: the same top-k (and document frequencies, IDF) written the
          obvious way in each tool (`bench/peers/`), the whole process timed (start-up,
          the JVM's included); each checked SAME / DIFFERENT against prepro's artifact;
          text workloads only; "skipped" when the bench extra is not installed;
- wc:     `wc -w` on the same file: the reading limit.
Every tool's wall time, CPU seconds (user + system of its whole process tree), peak
memory and their ratios to prepro's. With --sizes A,B every workload runs at both sizes
and the throughput past start-up is (MB(B) - MB(A)) / (wall(B) - wall(A)), and CPU
seconds per GB (cpu(B) - cpu(A)) / (GB(B) - GB(A)).
Prints the tables and writes every figure as JSON (--json).
"""

import argparse
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURE = "review"
TOOLS = ("prepro", "prepro-2w", "adapt", "tft", "polars", "duckdb", "spark", "wc")
# peer -> (the module it needs, its program): bench/peers/, installed by the bench extra.
PEERS = {"polars": ("polars", "bench.peers.polars_job"),
         "duckdb": ("duckdb", "bench.peers.duckdb_job"),
         "spark": ("pyspark", "bench.peers.spark_job")}
BENCH_EXTRA = "pip install -e .[bench]"
IDF_RELATIVE_TOLERANCE = 1e-6
TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]


@dataclass(frozen=True)
class Workload:
    docs: int               # documents (text) or rows (numeric)
    config: Dict            # TextVectorization options, or {"num_bins": n} for numeric
    tft_by_default: bool
    kind: str = "text"


WORKLOADS = {
    "ngram-tfidf": Workload(100_000, {"max_tokens": 50000, "output_mode": "tf_idf", "ngrams": 2}, True),
    "unigram": Workload(1_000_000, {"max_tokens": 50000}, False),
    # 8 float columns: a Discretization(num_bins=100) each, one Normalization of all 8.
    "numeric": Workload(10_000_000, {"num_bins": 100}, False, kind="numeric"),
}
NUMERIC_FILES = 10


@dataclass
class Case:
    """One workload at the chosen scale, with its corpus and working directory."""
    name: str
    workload: Workload
    docs: int
    corpus: str             # a text file, or a directory of Parquet files (numeric)
    workdir: str
    results: Dict[str, Dict] = field(default_factory=dict)

    @property
    def inputs(self) -> List[str]:
        if self.workload.kind == "numeric":
            return sorted(os.path.join(self.corpus, f) for f in os.listdir(self.corpus) if f.endswith(".parquet"))
        return [self.corpus]

    @property
    def input_mb(self) -> float:
        return sum(os.path.getsize(p) for p in self.inputs) / 1e6

    @property
    def label(self) -> str:
        return f"{self.name}, {self.docs:,}"

    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated: {', '.join(WORKLOADS)}")
    parser.add_argument("--docs-scale", type=float, default=1.0, help="multiply every workload's document count")
    parser.add_argument("--skip", default="", help=f"comma-separated tools not to run: {', '.join(TOOLS)}")
    parser.add_argument("--tft-on", default="", help="workloads to run TFT on besides the default (ngram-tfidf)")
    parser.add_argument("--tft-workers", type=int, default=1, help="FnApiRunner workers for TFT (1: in-process)")
    parser.add_argument("--scaling", action="store_true",
                        help="also run prepro with 2 worker processes (prepro-2w) for the 1 vs 2 worker ratio")
    parser.add_argument("--tft-feed", choices=("arrow", "dicts"), default="arrow", help="TFT input form")
    parser.add_argument("--data-dir", default=os.path.join(REPO, "bench", "data"),
                        help="corpora (cached) and run outputs")
    parser.add_argument("--json", help="results file (default DATA_DIR/results.json)")
    parser.add_argument("--sizes", default="",
                        help="comma-separated document (row) counts, e.g. 1000000,4000000: every workload "
                             "at each size (--docs-scale ignored), and the throughput past start-up "
                             "between the smallest and the largest")
    parser.add_argument("--memory-limit-mb", type=float,
                        default=round(0.7 * _total_memory_mb()),
                        help="kill a measured tool whose process tree passes this RSS (default 70%% of RAM)")
    args = parser.parse_args(argv)
    args.workloads, args.skip, args.tft_on = (_names(args.workloads, WORKLOADS, parser),
                                              _names(args.skip, TOOLS, parser),
                                              _names(args.tft_on, WORKLOADS, parser))
    try:
        args.sizes = sorted({int(n.replace("_", "")) for n in args.sizes.split(",") if n.strip()})
    except ValueError:
        parser.error(f"--sizes takes comma-separated integers, not {args.sizes!r}")
    if len(args.sizes) == 1 or any(n < 1 for n in args.sizes):
        parser.error("--sizes needs at least two positive sizes")
    args.data_dir = os.path.abspath(args.data_dir)
    args.json = args.json or os.path.join(args.data_dir, "results.json")
    return args


def _total_memory_mb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e6


def _names(text: str, allowed, parser) -> List[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        parser.error(f"unknown {unknown}; choose from {', '.join(allowed)}")
    return names


def prepare(name: str, args, docs: Optional[int] = None) -> Case:
    """Generates (or reuses) the workload's corpus and makes a clean working directory."""
    workload = WORKLOADS[name]
    docs = docs or max(1, round(workload.docs * args.docs_scale))
    if workload.kind == "numeric":
        corpus = os.path.join(args.data_dir, f"numeric-{docs}")
        generate = ["bench.numeric_data", "--rows", str(docs), "--files", str(NUMERIC_FILES)]
    else:
        corpus = os.path.join(args.data_dir, f"zipf-{docs}.txt")
        generate = ["bench.corpus", "--docs", str(docs)]
    if not os.path.exists(corpus):
        log(f"generating {corpus}")
        subprocess.run([sys.executable, "-m", *generate, "--out", corpus],
                       cwd=REPO, check=True, stdout=sys.stderr)
    workdir = os.path.join(args.data_dir, "runs", f"{name}-{docs}")
    shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(workdir)
    return Case(name, workload, docs, corpus, workdir)


CALLERS_TF_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")


def child_env() -> Dict[str, str]:
    """The environment for every measured process: Keras 3, whatever the caller set."""
    env = dict(os.environ)
    env.pop("TF_USE_LEGACY_KERAS", None)
    if CALLERS_TF_LOG_LEVEL is None:
        env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # set by compare_top_k, not by the caller
    return env


MEMORY_LIMIT_MB: Optional[float] = None  # set by main() from --memory-limit-mb


def measured(case: Case, tool: str, cmd: List[str]) -> Dict:
    """Runs `cmd` under `bench.measure` in a fresh process; its figures, or an error."""
    figures, logfile = case.path(f"{tool}.measure.json"), case.path(f"{tool}.log")
    limit = ["--memory-limit-mb", str(MEMORY_LIMIT_MB)] if MEMORY_LIMIT_MB else []
    wrapper = [sys.executable, "-m", "bench.measure", "--json", figures, *limit, "--"] + cmd
    with open(logfile, "wb") as out:
        subprocess.run(wrapper, cwd=REPO, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
    if not os.path.exists(figures):
        return {"status": "error", "error": f"bench.measure wrote no result; see {logfile}", "log": logfile}
    with open(figures) as f:
        result = {"status": "ok", "log": logfile, "process": json.load(f)}
    result["cpu_s"] = result["process"].get("cpu_s")
    if result["process"].get("memory_limit_exceeded"):
        result.update(status="error", error=f"killed: its processes passed {MEMORY_LIMIT_MB:,.0f} MB of RSS "
                                            f"(--memory-limit-mb; full log: {logfile})")
    elif result["process"]["returncode"] != 0:
        result.update(status="error", error=f"exit code {result['process']['returncode']}: "
                                            f"{_tail(logfile)} (full log: {logfile})")
    return result


def _tail(path: str, lines: int = 5) -> str:
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "replace").strip().splitlines()
    return " | ".join(text[-lines:])


def _child_result(result: Dict, path: str) -> Optional[Dict]:
    """The JSON a job wrote about itself, or None (and result marked as an error)."""
    if result["status"] == "ok" and not os.path.exists(path):
        result.update(status="error", error=f"the job wrote no result; see {result['log']}")
    if result["status"] != "ok":
        return None
    with open(path) as f:
        return json.load(f)


def run_prepro(case: Case, tool: str = "prepro", beam_args: Optional[List[str]] = None) -> Dict:
    """`prepro analyze` as a user runs it: wall time and tree peak of the whole command."""
    spec = case.path("spec.yaml")
    if case.workload.kind == "numeric":
        from bench.numeric_adapt_job import spec_features
        features, fmt, pattern = spec_features(**case.workload.config), "parquet", os.path.join(case.corpus, "*.parquet")
    else:
        features = {FEATURE: {"source": "text", "layer": "TextVectorization", "config": case.workload.config}}
        fmt, pattern = "text", case.corpus
    with open(spec, "w") as f:
        yaml.safe_dump({"features": features}, f)
    exe = os.path.join(os.path.dirname(sys.executable), "prepro")
    out = case.path(f"{tool}-artifacts")
    result = measured(case, tool, [exe, "analyze", "--spec", spec, "--input", pattern,
                                   "--format", fmt, "--output", out, *(beam_args or [])])
    result["artifacts"] = out
    if result["status"] == "ok":
        result.update(wall_s=result["process"]["wall_s"], peak_mb=result["process"]["peak_mb"])
    return result


def run_adapt(case: Case, artifacts: Optional[str]) -> Dict:
    """adapt() alone (its own clock and ru_maxrss right after it), then the parity check."""
    out = case.path("adapt.json")
    if case.workload.kind == "numeric":
        cmd = [sys.executable, "-m", "bench.numeric_adapt_job", "--data", case.corpus,
               "--num-bins", str(case.workload.config["num_bins"]), "--result", out]
    else:
        cmd = [sys.executable, "-m", "bench.adapt_job", "--corpus", case.corpus, "--feature", FEATURE,
               "--config", json.dumps(case.workload.config), "--result", out]
    result = measured(case, "adapt", cmd + (["--artifacts", artifacts] if artifacts else []))
    job = _child_result(result, out)
    if job and case.workload.kind == "numeric":
        result.update(job=job, wall_s=job["adapt_s"], peak_mb=job["peak_after_adapt_mb"],
                      **numeric_check(job["accuracy"]))
    elif job:
        result.update(job=job, wall_s=job["adapt_s"], peak_mb=job["peak_after_adapt_mb"],
                      parity=job["parity"], parity_detail=job["detail"])
    return result


def numeric_check(accuracy: Dict) -> Dict:
    """PASS if prepro's boundaries are within their bound and 10x closer than adapt()'s."""
    worst = accuracy["worst_rank_error"]
    if "prepro" not in worst:
        return {"parity": "n/a", "parity_detail": f"adapt() worst rank error {worst['adapt']:.4f}; no prepro artifacts"}
    bound = max(e["prepro_bound"] for e in accuracy["rank_error"].values())
    moments = accuracy["moments_relative_error"]
    detail = (f"worst rank error over 8 columns: adapt() {worst['adapt']:.4f}, prepro {worst['prepro']:.6f} "
              f"(bound {bound}), {worst['adapt'] / max(worst['prepro'], 1e-12):,.0f}x smaller; "
              f"largest relative error of the 8 variances vs float64: adapt() "
              f"{moments['adapt']['variance']:.2e}, prepro {moments['prepro']['variance']:.2e}")
    ok = worst["prepro"] <= bound and worst["prepro"] * 10 <= worst["adapt"]
    return {"parity": "PASS" if ok else "FAIL", "parity_detail": detail}


def run_tft(case: Case, args, prepro_artifacts: Optional[str]) -> Dict:
    """TFT's AnalyzeDataset (pipeline time; peak of the whole process tree), and how its
    vocabulary compares with prepro's."""
    out, output = case.path("tft.json"), case.path("tft-output")
    cmd = [sys.executable, "-m", "bench.tft_job", "--corpus", case.corpus, "--output", output,
           "--config", json.dumps(case.workload.config), "--result", out,
           "--workers", str(args.tft_workers), "--feed", args.tft_feed]
    result = measured(case, "tft", cmd)
    job = _child_result(result, out)
    if job:
        result.update(job=job, wall_s=job["pipeline_s"], peak_mb=result["process"]["peak_mb"])
        if job["vocabulary_file"] and prepro_artifacts:
            result["vocabulary_vs_prepro"] = compare_vocabularies(job["vocabulary_file"], prepro_artifacts)
    return result


def compare_vocabularies(tft_file: str, prepro_artifacts: str) -> str:
    """How TFT's vocabulary file relates to prepro's learned tokens (both in rank order)."""
    import prepro
    with open(tft_file, "rb") as f:
        tft_tokens = f.read().decode("utf-8").split("\n")
    if tft_tokens and tft_tokens[-1] == "":
        tft_tokens.pop()
    try:
        ours = prepro.load(prepro_artifacts).vocabulary(FEATURE)
    except Exception as e:  # prepro's own failure is reported by its row
        return f"not compared: {type(e).__name__}: {e}"
    if tft_tokens == ours:
        return f"identical to prepro's ({len(ours)} tokens, same order)"
    missing = len(set(ours) - set(tft_tokens))
    if missing == 0 and len(tft_tokens) == len(ours):
        moved = sum(a != b for a, b in zip(tft_tokens, ours))
        return f"same {len(ours)} tokens as prepro's, {moved} at a different rank"
    return (f"{len(tft_tokens)} tokens vs prepro's {len(ours)}; {missing} of prepro's "
            f"are not in TFT's")


def top_k(config: Dict) -> int:
    """How many tokens the layer learns: max_tokens less the OOV slot, and the mask in "int" mode."""
    return config["max_tokens"] - (2 if config.get("output_mode", "int") == "int" else 1)


def peer_missing(tool: str) -> Optional[str]:
    """Why a peer cannot run here, or None."""
    module = PEERS[tool][0]
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed: {BENCH_EXTRA}"
    if tool == "spark" and not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        return "no Java (Spark needs a JRE 17 or later on PATH or in JAVA_HOME)"
    return None


def run_peer(case: Case, tool: str) -> Dict:
    """A peer program on the same file: the whole process timed, start-up included."""
    out = case.path(f"{tool}.json")
    config = case.workload.config
    cmd = [sys.executable, "-m", PEERS[tool][1], "--corpus", case.corpus, "--top-k", str(top_k(config)),
           "--ngrams", str(config.get("ngrams") or 1), "--result", out]
    if config.get("output_mode") == "tf_idf":
        cmd.append("--tf-idf")
    result = measured(case, tool, cmd)
    job = _child_result(result, out)
    if job:
        result.update(job=job, result_file=out, wall_s=result["process"]["wall_s"],
                      peak_mb=result["process"]["peak_mb"])
        del job["tokens"], job["counts"], job["doc_counts"], job["idf"]  # in result_file; keep the JSON small
    return result


def run_wc(case: Case) -> Dict:
    """`wc -w` on the corpus: reading the file and finding its words, nothing more."""
    result = measured(case, "wc", ["wc", "-w", case.corpus])
    if result["status"] == "ok":
        with open(result["log"], "rb") as f:
            words = int(f.read().split()[0])
        result.update(wall_s=result["process"]["wall_s"], peak_mb=result["process"]["peak_mb"],
                      check=f"{words:,} words", words=words,
                      locale=f"LC_ALL={os.environ.get('LC_ALL') or ''} LANG={os.environ.get('LANG') or ''}")
    return result


def compare_top_k(peer_file: str, artifacts: str, tf_idf: bool) -> Dict:
    """SAME if a peer's top-k is prepro's learned vocabulary in rank order, with the same
    counts (and document frequencies, and IDF weights within 1e-6 relative for tf_idf);
    else DIFFERENT and how."""
    import numpy as np
    import prepro
    # idf_weights runs TensorFlow's ops (adapt()'s bits): keep its C++ start-up logs out
    # of the benchmark's output. (child_env leaves it out of the measured tools' runs.)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with open(peer_file, encoding="utf-8") as f:
        peer = json.load(f)
    try:
        arts = prepro.load(artifacts)
        ours = arts.vocabulary(FEATURE)
        our_counts = [int(c) for c in arts.token_counts(FEATURE)]
    except Exception as e:  # prepro's own failure is reported by its row
        return {"parity": "n/a", "parity_detail": f"not compared: {type(e).__name__}: {e}"}
    tokens, counts = peer["tokens"], peer["counts"]
    if tokens != ours:
        differ = sum(a != b for a, b in zip(tokens, ours)) + abs(len(tokens) - len(ours))
        first = next((i for i, (a, b) in enumerate(zip(tokens, ours)) if a != b), min(len(tokens), len(ours)))
        at = lambda toks, cs: (f"{toks[first]!r} (count {cs[first]})" if first < len(toks)  # noqa: E731
                               else "nothing (list ends)")
        missing = len(set(ours) - set(tokens))
        return {"parity": "DIFFERENT",
                "parity_detail": f"{differ} of {len(ours)} ranks differ ({len(tokens)} tokens vs prepro's "
                                 f"{len(ours)}; {missing} of prepro's tokens absent); first at rank {first}: "
                                 f"peer {at(tokens, counts)}, prepro {at(ours, our_counts)}"}
    checks = [("counts", counts, our_counts)]
    if tf_idf:
        checks.append(("document frequencies", peer["doc_counts"],
                       [int(c) for c in arts.document_frequencies(FEATURE)]))
    for what, theirs, mine in checks:
        if theirs != mine:
            i = next(i for i, (a, b) in enumerate(zip(theirs, mine)) if a != b)
            return {"parity": "DIFFERENT", "parity_detail": f"same tokens, {what} differ: "
                                                            f"{sum(a != b for a, b in zip(theirs, mine))} tokens, "
                                                            f"first {ours[i]!r} at rank {i}: peer {theirs[i]}, "
                                                            f"prepro {mine[i]}"}
    detail = f"same {len(ours)} tokens in rank order, same counts"
    if tf_idf:
        theirs, mine = np.asarray(peer["idf"], np.float64), arts.idf_weights(FEATURE).astype(np.float64)
        relative = np.abs(theirs - mine) / np.abs(mine)
        worst = float(relative.max()) if len(mine) else 0.0
        if not worst <= IDF_RELATIVE_TOLERANCE:
            i = int(np.nanargmax(relative))
            return {"parity": "DIFFERENT", "parity_detail": f"same tokens and document frequencies, IDF "
                                                            f"off by {worst:.2e} relative at rank {i} "
                                                            f"({ours[i]!r}: peer {theirs[i]}, prepro {mine[i]})"}
        detail += f" and document frequencies, IDF within {worst:.1e} relative (float64 vs prepro's float32)"
    return {"parity": "SAME", "parity_detail": detail}


def run_case(case: Case, args) -> None:
    """Every tool on one workload, prepro first (adapt's parity check needs its artifacts)."""
    for tool in args.skip:
        case.results[tool] = {"status": "skipped", "why": f"--skip {tool}"}
    if case.workload.kind == "numeric" and "tft" not in args.skip:
        case.results["tft"] = {"status": "skipped", "why": "TFT is not wired for the numeric workload"}
    if not (case.workload.tft_by_default or case.name in args.tft_on or "tft" in case.results):
        case.results["tft"] = {"status": "skipped", "why": f"off by default for {case.name}; --tft-on {case.name}"}
    if not args.scaling and "prepro-2w" not in case.results:
        case.results["prepro-2w"] = {"status": "skipped", "why": "--scaling not given"}
    artifacts = None
    if "prepro-2w" not in case.results:
        case.results["prepro-2w"] = report(case, "prepro-2w", run_prepro(case, "prepro-2w", TWO_WORKERS))
    if "prepro" not in case.results:
        case.results["prepro"] = report(case, "prepro", run_prepro(case))
        artifacts = case.results["prepro"]["artifacts"] if case.results["prepro"]["status"] == "ok" else None
    two = case.results["prepro-2w"]
    if two["status"] == "ok" and artifacts:
        same = _tree_bytes(two["artifacts"]) == _tree_bytes(artifacts)
        two["parity"] = "SAME BYTES" if same else "FAIL"
        two["parity_detail"] = ("artifacts byte-identical to the in-process run's" if same
                                else "artifacts differ from the in-process run's")
    if "adapt" not in case.results:
        case.results["adapt"] = report(case, "adapt", run_adapt(case, artifacts))
    if "tft" not in case.results:
        case.results["tft"] = report(case, "tft", run_tft(case, args, artifacts))
    for tool in PEERS:
        if tool in case.results:
            continue
        why = ("the peers are wired for the text workloads only" if case.workload.kind != "text"
               else peer_missing(tool))
        case.results[tool] = ({"status": "skipped", "why": why} if why
                              else report(case, tool, run_peer(case, tool)))
    if "wc" not in case.results:
        case.results["wc"] = (report(case, "wc", run_wc(case)) if case.workload.kind == "text" else
                              {"status": "skipped", "why": "wc -w is the reading limit of the text workloads"})
    for tool in PEERS:  # after every tool has run: the check loads prepro (and TensorFlow) here
        r = case.results[tool]
        if r["status"] == "ok":
            r.update(compare_top_k(r["result_file"], artifacts, case.workload.config.get("output_mode") == "tf_idf")
                     if artifacts else {"parity": "n/a", "parity_detail": "no prepro artifacts to compare"})
            log(f"[{case.label}] {tool}: {r['parity']}: {r['parity_detail']}")
    for result in case.results.values():
        if result.get("wall_s"):
            result["mb_s"] = case.input_mb / result["wall_s"]


def _tree_bytes(root: str) -> Dict[str, bytes]:
    out = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, name), root)] = f.read()
    return out


def report(case: Case, tool: str, result: Dict) -> Dict:
    if result["status"] == "ok":
        log(f"[{case.label}] {tool}: {result['wall_s']:.1f} s, peak {result['peak_mb']:.0f} MB"
            + (f", parity {result['parity']}" if "parity" in result else ""))
    else:
        log(f"[{case.label}] {tool}: {result['status'].upper()}: {result.get('error')}")
    return result


def table(cases: List[Case]) -> str:
    """One row per workload and tool: wall s, CPU s, MB/s, peak MB, ratios to prepro, parity."""
    head = (f"{'workload':<12} {'rows':>10} {'MB':>7}  {'tool':<9} {'wall s':>8} {'CPU s':>7} {'MB/s':>7} "
            f"{'peak MB':>8}  {'wall/prepro':>11} {'CPU/prepro':>10} {'peak/prepro':>11} {'others':>6}  check")
    rows = [head, "-" * len(head)]
    for case in cases:
        base = case.results.get("prepro", {})
        for tool in TOOLS:
            if tool not in case.results:
                continue
            r = case.results[tool]
            lead = f"{case.name:<12} {case.docs:>10,} {case.input_mb:>7.1f}  {tool:<9}"
            if r["status"] != "ok":
                rows.append(f"{lead} {r['status']}: {r.get('why') or r.get('error')}")
                continue
            cpu = f"{r['cpu_s']:>7.1f}" if r.get("cpu_s") is not None else f"{'n/a':>7}"
            others = r.get("process", {}).get("others_cpu_s")
            others = f"{others:>6.1f}" if others is not None else f"{'n/a':>6}"
            rows.append(f"{lead} {r['wall_s']:>8.1f} {cpu} {r['mb_s']:>7.2f} {r['peak_mb']:>8.0f}"
                        f"  {_ratio(r, base, 'wall_s'):>11} {_ratio(r, base, 'cpu_s'):>10} "
                        f"{_ratio(r, base, 'peak_mb'):>11} {others}  {r.get('parity', r.get('check', ''))}")
    return "\n".join(rows)


def _ratio(result: Dict, base: Dict, key: str) -> str:
    if base.get("status") != "ok" or not result.get(key) or not base.get(key):
        return "n/a"
    return f"{result[key] / base[key]:.2f}x"


def throughput(cases: List[Case]) -> Dict[str, Dict[str, Dict]]:
    """Per workload and tool, between its smallest and largest size: MB/s and CPU s per GB
    past start-up (the differences of wall, CPU and input size), when both sizes ran."""
    out: Dict[str, Dict[str, Dict]] = {}
    for name in dict.fromkeys(c.name for c in cases):
        sized = sorted((c for c in cases if c.name == name), key=lambda c: c.docs)
        if len(sized) < 2:
            continue
        small, big = sized[0], sized[-1]
        mb = big.input_mb - small.input_mb
        rows = out.setdefault(name, {})
        for tool in TOOLS:
            a, b = small.results.get(tool, {}), big.results.get(tool, {})
            if a.get("status") != "ok" or b.get("status") != "ok":
                if a.get("status", "skipped") == b.get("status", "skipped") == "skipped":
                    continue  # not asked for (listed as skipped in the notes)
                why = next((f"at {c.docs:,}: {r.get('status', 'not run')}: {r.get('why') or r.get('error') or ''}"
                            for c, r in ((small, a), (big, b)) if r.get("status") != "ok"), "")
                rows[tool] = {"status": "incomplete", "why": why}
                continue
            wall = b["wall_s"] - a["wall_s"]
            cpu = b["cpu_s"] - a["cpu_s"] if a.get("cpu_s") is not None and b.get("cpu_s") is not None else None
            rows[tool] = {"status": "ok", "small_docs": small.docs, "big_docs": big.docs, "delta_mb": mb,
                          "delta_wall_s": wall, "delta_cpu_s": cpu,
                          # no growth (noise at sizes too close together) gives no rate
                          "mb_s": mb / wall if wall > 0 and mb > 0 else None,
                          "cpu_s_per_gb": cpu / (mb / 1e3) if cpu is not None and cpu > 0 and mb > 0 else None}
    return out


def throughput_table(rates: Dict[str, Dict[str, Dict]]) -> str:
    head = (f"{'workload':<12} {'docs':>21}  {'tool':<9} {'+MB':>7} {'+wall s':>8} {'+CPU s':>7}"
            f" {'MB/s':>8} {'x prepro':>8} {'CPU s/GB':>9} {'x prepro':>8}")
    rows = ["throughput past start-up: MB/s = +MB / +wall s; CPU s/GB = +CPU s / +GB "
            "(+ = largest size minus smallest)", head, "-" * len(head)]
    for name, tools in rates.items():
        base = tools.get("prepro", {})
        for tool, r in tools.items():
            if r["status"] != "ok":
                rows.append(f"{name:<12} {'':>21}  {tool:<9} {r['status']}: {r['why']}")
                continue
            docs = f"{r['small_docs']:,}->{r['big_docs']:,}"
            speed, speed_x = _rate(r, base, "mb_s", 2)
            cpu, cpu_x = _rate(r, base, "cpu_s_per_gb", 1)
            delta_cpu = f"{r['delta_cpu_s']:>7.1f}" if r["delta_cpu_s"] is not None else f"{'n/a':>7}"
            rows.append(f"{name:<12} {docs:>21}  {tool:<9} {r['delta_mb']:>7.1f} {r['delta_wall_s']:>8.1f} "
                        f"{delta_cpu} {speed:>8} {speed_x:>8} {cpu:>9} {cpu_x:>8}")
    rows.append("x prepro: the tool's figure over prepro's (MB/s: > 1 is faster than prepro; CPU s/GB: "
                "> 1 is more CPU per GB); n/a where the time did not grow between the sizes")
    return "\n".join(rows)


def _rate(r: Dict, base: Dict, key: str, digits: int):
    """A rate and its ratio to prepro's, as printed (n/a when either is missing)."""
    if r.get(key) is None:
        return "n/a", "n/a"
    ratio = f"{r[key] / base[key]:.2f}x" if base.get("status") == "ok" and base.get(key) else "n/a"
    return f"{r[key]:.{digits}f}", ratio


def notes(cases: List[Case]) -> str:
    lines = ["adapt: wall = the adapt() call only; peak = its process's ru_maxrss right after adapt().",
             "tft: wall = the Beam pipeline run only (imports excluded); peak = whole process tree.",
             "prepro: wall = the whole CLI run, start-up included; peak = whole process tree.",
             "polars, duckdb, spark (bench/peers/), wc -w: wall = the whole process, start-up (the JVM's) "
             "included; peak = whole process tree.",
             "CPU s = user + system of the measured process tree (getrusage RUSAGE_CHILDREN; for adapt and "
             "tft the whole process, imports and reading included, though their wall is the call only); "
             "others = CPU s the rest of the machine used meanwhile (/proc/stat): near 0 on an idle machine, "
             "comparable to the wall time when another job competed for the 2 cores.",
             "peers' check: SAME = prepro's learned tokens in rank order with the same counts (tf_idf: "
             "document frequencies too, IDF within 1e-6 relative); tokenization: the peers lower-case "
             "with Unicode rules (Keras: ASCII A-Z only) and split on ' ' dropping empty tokens (Keras: "
             "runs of the six ASCII whitespace bytes); the bench corpus is ASCII with single spaces, "
             "so both agree on it.",
             "MB = 10^6 bytes; MB/s = input bytes / wall; x/prepro > 1 means more than prepro.",
             "check: text: PASS if the artifact-built layer equals the adapted one; numeric: PASS if "
             "prepro's worst rank error is within its bound and 10x below adapt()'s; prepro-2w (--scaling): "
             "prepro with 2 worker processes, wall/prepro is the 2-worker/1-worker time ratio."]
    for case in cases:
        for tool, r in case.results.items():
            if r.get("parity_detail"):
                lines.append(f"[{case.label}] {tool} check: {r['parity']}: {r['parity_detail']}")
            if tool == "wc" and r.get("words") is not None:
                lines.append(f"[{case.label}] wc -w: {r['words']:,} words ({r['locale']})")
            if r.get("vocabulary_vs_prepro"):
                lines.append(f"[{case.label}] tft vocabulary: {r['vocabulary_vs_prepro']}")
            if r["status"] == "skipped":
                lines.append(f"[{case.label}] {tool} skipped: {r['why']}")
            if r.get("status") == "ok" and r.get("job", {}).get("in_process_s") is not None:
                lines.append(f"[{case.label}] {tool}: {r['job']['in_process_s']:.1f} s of its {r['wall_s']:.1f} s "
                             f"after its imports ({r['job']['tool']} {r['job']['version']})")
    return "\n".join(lines)


def write_json(path: str, cases: List[Case], args, code: Dict[str, str], rates=None) -> None:
    body = {"prepro_code": code, "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]},
            "docs_scale": args.docs_scale, "sizes": args.sizes,
            "workloads": {(c.name if not args.sizes else f"{c.name}@{c.docs}"):
                          {"docs": c.docs, "corpus": c.corpus, "input_mb": c.input_mb,
                           "config": c.workload.config, "tools": c.results} for c in cases},
            "throughput": rates or {}}
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(body, f, indent=1)


def source_state() -> str:
    """The commit the measured prepro code is at, marked if prepro/ or pipelines/ has
    uncommitted changes (the harness measures the working tree)."""
    def git(*args):
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "prepro", "pipelines", "setup.py")
    return commit + (" + uncommitted changes" if dirty else "")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    global MEMORY_LIMIT_MB
    args = parse_args(argv)
    MEMORY_LIMIT_MB = args.memory_limit_mb
    code = {"start": source_state(), "load_average_at_start": os.getloadavg()[0]}
    cases = []
    for name in args.workloads:
        for docs in args.sizes or [None]:
            case = prepare(name, args, docs)
            run_case(case, args)
            cases.append(case)
    code["end"] = source_state()
    changed = "" if code["start"] == code["end"] else f"; CHANGED during the run, now {code['end']}"
    print(f"prepro code: {code['start']}{changed}; load average at start "
          f"{code['load_average_at_start']:.2f} on {os.cpu_count()} cores\n")
    print(table(cases))
    rates = throughput(cases) if args.sizes else None
    if rates:
        print()
        print(throughput_table(rates))
    print()
    print(notes(cases))
    write_json(args.json, cases, args, code, rates)
    print(f"\nresults: {args.json}")
    failed = any(r["status"] == "error" or r.get("parity") in ("FAIL", "DIFFERENT")
                 for c in cases for r in c.results.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
