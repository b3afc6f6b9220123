"""Huge vocabularies: >= 20M distinct tokens, memory per process, an independent exact
count, and loading the > 500 MB vocabulary file into StringLookup.

    python -m bench.huge_vocab                 # full size: 45M rows, ~21.6M distinct (~10 min)
    python -m bench.huge_vocab --scale 0.02    # small and quick

Steps, each in its own fresh process under `bench.measure` (wall time, peak RSS of
every process of the tree with its role):
1. generate (cached in --data-dir): CSV files of one column `user`, ids like
   "user:123:456" (~26 bytes): 20% drawn from a Zipf head, 80% uniform over a large id
   space, so most tokens occur once or twice and the ranking is decided by counts and,
   among equal counts, by token bytes;
2. prepro: `prepro analyze` with a StringLookup spec and no max_tokens (the whole
   vocabulary), on the default runner (inputs > 1 GiB: worker processes, 16 shards);
3. exact count: an independent in-memory count of the same CSV files (pyarrow
   `value_counts` and one sort; no prepro code), its expected `vocabulary.txt` bytes
   compared by SHA-256 with prepro's, and its distinct count with the generator's;
4. load: `prepro.load(...)` (checksums verified) then `.layer("user")`, a stock
   StringLookup reading the file, timed, with the process's RSS; then lookups of
   10,000 tokens sampled from the file (index = line + 1) and an OOV token (index 0).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS, ID_SPACE, HEAD_IDS, HEAD_SHARE, FILES = 45_000_000, 32_000_000, 200_000, 0.2, 8
FEATURE, COLUMN = "user", "user"


def token_strings(ids: np.ndarray):
    """"user:<id>:<a 12-digit-or-shorter hash of id>", as an Arrow binary array."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from prepro.stats.counts import _mix
    tag = (_mix(ids.astype(np.uint64)) % np.uint64(10 ** 12)).astype(np.int64)
    return pc.binary_join_element_wise("user", pc.cast(pa.array(ids), pa.string()),
                                       pc.cast(pa.array(tag), pa.string()), ":")


def generate(out: str, rows: int, id_space: int, files: int, seed: int = 7) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, min(HEAD_IDS, id_space) + 1) ** 1.05  # (a small --scale: fewer head ids)
    cdf = np.cumsum(weights) / weights.sum()
    seen = np.zeros(id_space, dtype=bool)
    os.makedirs(out, exist_ok=True)
    for i in range(files):
        n = rows // files + (i < rows % files)
        head = np.searchsorted(cdf, rng.random(int(n * HEAD_SHARE)))
        ids = np.concatenate([head, rng.integers(0, id_space, n - len(head))])
        rng.shuffle(ids)
        seen[ids] = True
        pacsv.write_csv(pa.table({COLUMN: token_strings(ids)}), os.path.join(out, f"users-{i:02d}.csv"))
    meta = {"rows": rows, "id_space": id_space, "files": files, "seed": seed,
            "distinct": int(seen.sum()), "bytes": _input_bytes(out)}
    with open(os.path.join(out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def _inputs(data: str):
    return sorted(os.path.join(data, f) for f in os.listdir(data) if f.endswith(".csv"))


def _input_bytes(data: str) -> int:
    return sum(os.path.getsize(p) for p in _inputs(data))


def exact_vocabulary(data: str) -> dict:
    """The vocabulary Keras would learn (count desc, then token bytes desc), counted in
    one process with pyarrow alone: SHA-256 and size of its file, distinct count, top 5."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    convert = pacsv.ConvertOptions(column_types={COLUMN: pa.binary()}, strings_can_be_null=False)
    column = pa.chunked_array([c for p in _inputs(data)
                               for c in pacsv.read_csv(p, convert_options=convert)[COLUMN].chunks])
    counted = pc.value_counts(column)
    table = pa.table({"token": counted.field("values"), "count": counted.field("counts")})
    del column, counted
    table = table.take(pc.sort_indices(table, [("count", "descending"), ("token", "descending")]))
    sha, size = hashlib.sha256(), 0
    for start in range(0, table.num_rows, 1 << 20):
        lines = b"\n".join(table["token"].slice(start, 1 << 20).to_pylist()) + b"\n"
        sha.update(lines)
        size += len(lines)
    top = [[t.decode(), c] for t, c in zip(table["token"][:5].to_pylist(), table["count"][:5].to_pylist())]
    return {"distinct": table.num_rows, "sha256": sha.hexdigest(), "bytes": size, "top": top}


def load_layer(artifacts: str, samples: int = 10_000) -> dict:
    """Times prepro.load + .layer() for the StringLookup and checks lookups."""
    import psutil
    import keras
    import tensorflow as tf
    import prepro
    process = psutil.Process()
    rss0 = process.memory_info().rss
    t0 = time.perf_counter()
    arts = prepro.load(artifacts)
    t1 = time.perf_counter()
    layer = arts.layer(FEATURE)
    t2 = time.perf_counter()
    size = layer.vocabulary_size()
    rss1 = process.memory_info().rss
    path = arts.files.path(arts.manifest["features"][FEATURE]["state"]["vocabulary_file"])  # (in its state dir)
    lines = np.random.default_rng(0).choice(size - 1, min(samples, size - 1), replace=False)
    wanted = set(lines.tolist())
    tokens = {}
    with open(path, "rb") as f:
        for number, line in enumerate(f):
            if number in wanted:
                tokens[number] = line.rstrip(b"\n")
    t3 = time.perf_counter()
    got = layer(tf.constant([tokens[n] for n in lines] + [b"user:not-a-token"])).numpy()
    t4 = time.perf_counter()
    assert isinstance(layer, keras.layers.StringLookup)
    ok = bool((got[:-1] == lines + 1).all() and got[-1] == 0)
    return {"verify_s": t1 - t0, "layer_s": t2 - t1, "lookup_s": t4 - t3, "vocabulary_size": size,
            "file_mb": os.path.getsize(path) / 1e6, "rss_before_mb": rss0 / 1e6,
            "rss_after_mb": rss1 / 1e6, "layer_rss_mb": (rss1 - rss0) / 1e6, "lookups_ok": ok,
            "samples": samples}


def _measured(workdir: str, name: str, cmd) -> dict:
    """`cmd` under bench.measure (as bench.run measures its tools); its figures."""
    from bench.run import child_env, _tail
    figures, log = os.path.join(workdir, f"{name}.measure.json"), os.path.join(workdir, f"{name}.log")
    with open(log, "wb") as out:
        subprocess.run([sys.executable, "-m", "bench.measure", "--json", figures, "--", *cmd],
                       cwd=REPO, env=child_env(), stdout=out, stderr=subprocess.STDOUT)
    with open(figures) as f:
        result = json.load(f)
    if result["returncode"] != 0:
        raise SystemExit(f"{name} failed: {_tail(log)} (full log: {log})")
    return result


def _json_step(workdir: str, name: str, args) -> tuple:
    out = os.path.join(workdir, f"{name}.json")
    measured = _measured(workdir, name, [sys.executable, "-m", "bench.huge_vocab", name, *args, "--result", out])
    with open(out) as f:
        return measured, json.load(f)


def _peaks(measured: dict) -> str:
    by_role = {}
    for p in measured["processes"]:
        by_role.setdefault(p["role"], []).append(p["peak_mb"])
    return ", ".join(f"{role} {' / '.join(f'{mb:,.0f}' for mb in sorted(mbs, reverse=True))} MB"
                     for role, mbs in sorted(by_role.items()) if max(mbs) > 50)


def run(args) -> int:
    rows, id_space = round(ROWS * args.scale), round(ID_SPACE * args.scale)
    os.makedirs(args.data_dir, exist_ok=True)  # (a fresh clone has no bench/data/)
    data = os.path.join(args.data_dir, f"huge-vocab-{rows}")
    if not os.path.exists(os.path.join(data, "meta.json")):
        print(f"generating {data}", file=sys.stderr)
        _measured(args.data_dir, f"generate-{rows}", [sys.executable, "-m", "bench.huge_vocab", "generate",
                                                      "--out", data, "--rows", str(rows),
                                                      "--id-space", str(id_space)])
    with open(os.path.join(data, "meta.json")) as f:
        meta = json.load(f)
    workdir = os.path.join(args.data_dir, "runs", f"huge-vocab-{rows}")
    os.makedirs(workdir, exist_ok=True)
    spec, out = os.path.join(workdir, "spec.yaml"), os.path.join(workdir, "artifacts")
    with open(spec, "w") as f:
        json.dump({"features": {FEATURE: {"source": COLUMN, "layer": "StringLookup"}}}, f)  # JSON is YAML
    exe = os.path.join(os.path.dirname(sys.executable), "prepro")
    print(f"prepro analyze on {meta['bytes'] / 1e6:,.0f} MB", file=sys.stderr)
    job = _measured(workdir, "prepro", [exe, "analyze", "--spec", spec, "--input", os.path.join(data, "*.csv"),
                                        "--format", "csv", "--output", out, *args.beam_args])
    print("exact count", file=sys.stderr)
    count, expected = _json_step(workdir, "count", ["--data", data])
    print("load into StringLookup", file=sys.stderr)
    load, loaded = _json_step(workdir, "load", ["--artifacts", out])
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    entry = manifest["files"][f"{FEATURE}/vocabulary.txt"]
    figures = manifest["features"][FEATURE]["figures"]
    checks = {
        "vocabulary file = exact count's (SHA-256)": entry["sha256"] == expected["sha256"],
        "distinct: prepro = exact count = generator": figures["distinct_tokens"] == expected["distinct"] == meta["distinct"],
        "StringLookup lookups (10,000 tokens + OOV)": loaded["lookups_ok"],
        "vocabulary_size = distinct + OOV": loaded["vocabulary_size"] == expected["distinct"] + 1,
    }
    mb = meta["bytes"] / 1e6
    print(f"\ncorpus: {meta['rows']:,} rows, {mb:,.1f} MB in {meta['files']} CSV files, "
          f"{meta['distinct']:,} distinct tokens; vocabulary.txt {entry['bytes'] / 1e6:,.1f} MB")
    print(f"{'step':<12}{'wall s':>8}{'MB/s':>8}  peak RSS per process")
    print(f"{'prepro':<12}{job['wall_s']:>8.1f}{mb / job['wall_s']:>8.1f}  {_peaks(job)}")
    print(f"{'exact count':<12}{count['wall_s']:>8.1f}{mb / count['wall_s']:>8.1f}  {_peaks(count)}  (one process, in memory)")
    print(f"{'load':<12}{load['wall_s']:>8.1f}{'':>8}  {_peaks(load)}")
    print(f"load: verify checksums {loaded['verify_s']:.1f} s, StringLookup(vocabulary=file) "
          f"{loaded['layer_s']:.1f} s, +{loaded['layer_rss_mb']:,.0f} MB RSS "
          f"({loaded['rss_before_mb']:,.0f} -> {loaded['rss_after_mb']:,.0f} MB); "
          f"{loaded['samples']:,} lookups {loaded['lookup_s']:.2f} s")
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump({"meta": meta, "prepro": job, "count": count, "expected": expected, "load": load,
                   "loaded": loaded, "checks": checks, "figures": {k: v for k, v in figures.items()
                                                                   if k != "top_tokens"}}, f, indent=1)
    return 0 if all(checks.values()) else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="step")
    g = sub.add_parser("generate")
    g.add_argument("--out", required=True)
    g.add_argument("--rows", type=int, default=ROWS)
    g.add_argument("--id-space", type=int, default=ID_SPACE)
    g.add_argument("--files", type=int, default=FILES)
    c = sub.add_parser("count")
    c.add_argument("--data", required=True)
    c.add_argument("--result", required=True)
    lo = sub.add_parser("load")
    lo.add_argument("--artifacts", required=True)
    lo.add_argument("--result", required=True)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply rows and id space")
    parser.add_argument("--data-dir", default=os.path.join(REPO, "bench", "data"))
    args, beam_args = parser.parse_known_args(argv)
    if args.step == "generate":
        generate(args.out, args.rows, args.id_space, args.files)
        return 0
    if args.step in ("count", "load"):
        result = exact_vocabulary(args.data) if args.step == "count" else load_layer(args.artifacts)
        with open(args.result, "w") as f:
            json.dump(result, f, indent=1)
        return 0
    args.beam_args = beam_args  # e.g. --shards 32, --direct_num_workers=2
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
