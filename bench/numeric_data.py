"""Deterministic numeric table for the benchmarks: 8 float columns of different shapes.

    python -m bench.numeric_data --rows 10000000 --files 10 --out bench/data/numeric-10000000

Parquet files of float64 columns (row groups of 131,072 rows), the form numeric training
data usually takes. Columns: heavy tails (log-normal, Pareto), many ties (Poisson, a
zero-inflated amount), two modes, a narrow column far from 0 (hostile to float32 sums),
uniform and normal; the same arguments always give the same bytes.
"""

import argparse
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COLUMNS = ("lognormal", "pareto", "poisson", "zero_inflated", "bimodal", "offset", "uniform", "normal")
ROW_GROUP = 1 << 17


def generate(rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    values = {
        "lognormal": rng.lognormal(3.0, 1.5, rows),
        "pareto": rng.pareto(1.2, rows) * 100,
        "poisson": rng.poisson(4, rows).astype(np.float64),
        "zero_inflated": np.where(rng.random(rows) < 0.6, 0.0, np.round(rng.exponential(40, rows), 2)),
        "bimodal": np.where(rng.random(rows) < 0.3, rng.normal(-50, 2, rows), rng.normal(80, 10, rows)),
        "offset": 1e6 + rng.normal(0, 1, rows),
        "uniform": rng.uniform(-1, 1, rows),
        "normal": rng.normal(0, 1, rows),
    }
    return pa.table({name: values[name] for name in COLUMNS})


def write(out_dir: str, rows: int, files: int, seed: int = 2026) -> list:
    """Writes `files` Parquet files (reused if complete) and returns their paths."""
    paths = [os.path.join(out_dir, f"part-{k:03d}.parquet") for k in range(files)]
    if all(os.path.exists(p) for p in paths):
        return paths
    os.makedirs(out_dir, exist_ok=True)
    per_file = -(-rows // files)
    for k, path in enumerate(paths):
        n = min(per_file, rows - k * per_file)
        tmp = path + ".tmp"
        pq.write_table(generate(n, seed + k), tmp, row_group_size=ROW_GROUP, compression="snappy")
        os.replace(tmp, path)
    return paths


def read_columns(paths: list) -> dict:
    """The whole table as float64 NumPy columns (for baselines and exact quantiles)."""
    table = pa.concat_tables(pq.read_table(p) for p in paths)
    return {name: table[name].to_numpy() for name in COLUMNS}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    paths = write(args.out, args.rows, args.files, args.seed)
    print(f"{args.out}: {len(paths)} files, {sum(os.path.getsize(p) for p in paths) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
