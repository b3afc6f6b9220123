"""A user's own Beam pipeline that analyzes rows shaped like BigQuery's output
(`ReadFromBigQuery(output_type="PYTHON_DICT")`: None for NULL, lists for REPEATED
fields, Decimal for NUMERIC, bytes for BYTES, datetime for TIMESTAMP) with
`AnalyzeFeatures`, and writes the same rows as Parquet and CSV files for the CLI.

    python tests/analyze_features_job.py OUTPUT FORM [beam options...]

runs the pipeline (FORM: dicts, rows, namedtuples, dataclasses, record_batches) and
prints the published manifest's feature names, so tests can run it in its own process
(the portable runner's SDK workers are separate processes that find prepro installed).
"""

import csv
import dataclasses
import datetime
import decimal
import json
import random
import sys
from typing import List, NamedTuple, Optional

WORDS = ("the flight was late again but the crew was kind and the seat was fine "
         "food cold coffee hot landing smooth bumpy delayed gate changed twice").split()
TAGS = ["window", "aisle", "exit", "upgrade", "wifi"]

SPEC = {"features": {
    "review": {"source": "review", "layer": "TextVectorization",
               "config": {"max_tokens": 60, "ngrams": 2, "output_mode": "tf_idf"}},
    "carrier": {"source": "carrier", "layer": "StringLookup"},
    "flight": {"source": "flight", "layer": "IntegerLookup", "config": {"max_tokens": 50}},
    "fare": {"source": "fare", "layer": "Normalization"},
    "distance": {"source": "distance", "layer": "Discretization", "config": {"num_bins": 8},
                 "quantiles": "exact"},
    "distance_sketch": {"source": "distance", "layer": "Discretization", "config": {"num_bins": 8}},
    "code": {"source": "code", "layer": "StringLookup", "config": {"max_tokens": 20}},
}}
# REPEATED fields: a lookup over lists (these rows are never golden: only a shaped
# numeric feature reads a list into a golden row).
LIST_SPEC = {"features": {"tags": {"source": "tags", "layer": "StringLookup"},
                          "carrier": {"source": "carrier", "layer": "StringLookup"}}}
COLUMNS = ["review", "carrier", "flight", "fare", "distance", "code", "tags", "departed"]


def bigquery_rows(n: int = 700, seed: int = 3) -> List[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        rows.append({
            "review": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 14))) + rng.choice(["", ".", "!"]),
            "carrier": rng.choice(["AA", "UA", "DL", "B6", "WN"]),
            "flight": rng.randint(1, 90) if i % 11 else None,                       # INT64, NULLs
            "fare": decimal.Decimal(f"{rng.uniform(20, 900):.2f}") if i % 13 else None,  # NUMERIC
            "distance": rng.lognormvariate(6, 1) if i % 7 else None,                 # FLOAT64
            "code": bytes(rng.choice(b"ABCDEFGH") for _ in range(2)),                # BYTES
            "tags": [rng.choice(TAGS) for _ in range(rng.randint(0, 3))],           # REPEATED STRING
            "departed": datetime.datetime(2026, 1, 1) + datetime.timedelta(minutes=i),  # not read
        })
    return rows


class FlightRow(NamedTuple):
    review: str
    carrier: str
    flight: Optional[int]
    fare: Optional[decimal.Decimal]
    distance: Optional[float]
    code: bytes
    tags: List[str]
    departed: datetime.datetime


@dataclasses.dataclass
class FlightRecord:
    review: str
    carrier: str
    flight: Optional[int]
    fare: Optional[decimal.Decimal]
    distance: Optional[float]
    code: bytes
    tags: List[str]
    departed: datetime.datetime


def as_arrow(rows: List[dict]):
    """The rows as an Arrow table, the way they sit in a Parquet export (NUMERIC as float64)."""
    import pyarrow as pa
    return pa.table({
        "review": pa.array([r["review"] for r in rows], pa.string()),
        "carrier": pa.array([r["carrier"] for r in rows], pa.string()),
        "flight": pa.array([r["flight"] for r in rows], pa.int64()),
        "fare": pa.array([None if r["fare"] is None else float(r["fare"]) for r in rows], pa.float64()),
        "distance": pa.array([r["distance"] for r in rows], pa.float64()),
        "code": pa.array([r["code"] for r in rows], pa.binary()),
        "tags": pa.array([r["tags"] for r in rows], pa.list_(pa.string())),
    })


def elements(rows: List[dict], form: str) -> list:
    if form == "dicts":
        return rows
    if form == "rows":
        import apache_beam as beam
        return [beam.Row(**r) for r in rows]
    if form == "namedtuples":
        return [FlightRow(**r) for r in rows]
    if form == "dataclasses":
        return [FlightRecord(**r) for r in rows]
    if form == "record_batches":
        return as_arrow(rows).to_batches(max_chunksize=97)
    raise ValueError(form)


def write_parquet(rows: List[dict], path: str) -> str:
    import pyarrow.parquet as pq
    pq.write_table(as_arrow(rows), path, row_group_size=128)
    return path


def write_csv(rows: List[dict], path: str) -> str:
    """The scalar columns as CSV (NULL: an empty field)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS[:6])
        for r in rows:
            w.writerow(["" if r[c] is None else r[c].decode() if isinstance(r[c], bytes) else r[c]
                        for c in COLUMNS[:6]])
    return path


def run(output: str, form: str = "dicts", pipeline_args: Optional[List[str]] = None, spec=None, **options):
    """Runs the user's pipeline; returns the manifest `result.manifest` carried."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to
    from pipelines import AnalyzeFeatures
    runner = None
    args = list(pipeline_args or [])
    if not any(a.startswith("--runner") for a in args):
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner
        runner = FnApiRunner()
    elif "DaskRunner" in args:
        from apache_beam.runners.dask.dask_runner import DaskRunner
        i = args.index("--runner")
        del args[i:i + 2]
        runner = DaskRunner()
    analyze = AnalyzeFeatures(spec or SPEC, output, **options)
    names = sorted(analyze.spec.features)
    with beam.Pipeline(runner=runner, options=PipelineOptions(args)) as p:
        result = p | "Rows" >> beam.Create(elements(bigquery_rows(), form)) | analyze
        # The manifest reaches later steps of the pipeline.
        assert_that(result.manifest | beam.Map(lambda m: sorted(m["features"])), equal_to([names]))
    return json.loads(open(f"{output}/manifest.json", encoding="utf-8").read())


if __name__ == "__main__":
    manifest = run(sys.argv[1], sys.argv[2], sys.argv[3:])
    print(json.dumps(sorted(manifest["features"])))
