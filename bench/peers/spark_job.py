"""Spark peer: the text workloads' top-k the obvious way, with PySpark's DataFrame API
on `local[2]` (both cores of this machine), offline and bound to 127.0.0.1,
Spark's log at ERROR only.

    python -m bench.peers.spark_job --corpus C.txt --top-k 49998 [--ngrams 2 --tf-idf] --result out.json

`spark.read.text` (one document per line), `lower`, `regexp_replace(PUNCTUATION, "")`,
`split(" ")` without empty tokens; bigrams with `transform` over adjacent positions;
`explode`, `groupBy("token").count()`; with --tf-idf, documents numbered with
`monotonically_increasing_id()` and counted per (token, document) first, then per token;
`orderBy(count desc, token desc).limit(k)`. The JVM's start-up is part of the time.
"""

import os
import sys
import time
import warnings

from bench.peers.common import PUNCTUATION, parse_args, write_result

DRIVER_MEMORY = os.environ.get("BENCH_SPARK_DRIVER_MEMORY", "8g")  # local mode: the driver does the work
LOG_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spark-log4j2.properties")


def session():
    """A local session that needs no network: loopback only, no UI, warnings and worse only."""
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master("local[2]").appName("prepro-bench")
             .config("spark.driver.memory", DRIVER_MEMORY)
             .config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile=file:{LOG_CONFIG}")
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def main(argv=None) -> int:
    args = parse_args(argv, __doc__)
    # pyspark's import warns that it does not fully support pandas 3; nothing here uses pandas.
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    import pyspark
    from pyspark.sql import functions as F
    started = time.perf_counter()
    spark = session()
    docs = spark.read.text(args.corpus).select(
        F.monotonically_increasing_id().alias("doc"),
        F.filter(F.split(F.regexp_replace(F.lower("value"), PUNCTUATION, ""), " "),
                 lambda t: t != "").alias("words"))
    if args.ngrams == 2:
        bigrams = F.transform(F.sequence(F.lit(0), F.size("words") - 2),
                              lambda i: F.concat(F.get("words", i), F.lit(" "), F.get("words", i + 1)))
        # sequence(0, -1) counts down: a document of 0 or 1 words has no bigrams.
        grams = F.when(F.size("words") >= 2, F.concat("words", bigrams)).otherwise(F.col("words"))
    else:
        grams = F.col("words")
    tokens = docs.select("doc", F.explode(grams).alias("token"))
    if args.tf_idf:
        documents = docs.count()
        counted = (tokens.groupBy("token", "doc").count()
                   .groupBy("token").agg(F.sum("count").alias("count"), F.count("*").alias("doc_count"))
                   .withColumn("idf", F.log(1 + F.lit(documents) / (1 + F.col("doc_count")))))
    else:
        counted = tokens.groupBy("token").count()
    rows = counted.orderBy(F.desc("count"), F.desc("token")).limit(args.top_k).collect()
    spark.stop()
    write_result(args.result, "spark", pyspark.__version__, [r["token"] for r in rows], [r["count"] for r in rows],
                 [r["doc_count"] for r in rows] if args.tf_idf else None,
                 [r["idf"] for r in rows] if args.tf_idf else None,
                 documents if args.tf_idf else None, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
