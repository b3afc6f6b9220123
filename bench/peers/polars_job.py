"""Polars peer: the text workloads' top-k the obvious way, with Polars's lazy API.

    python -m bench.peers.polars_job --corpus C.txt --top-k 49998 [--ngrams 2 --tf-idf] --result out.json

`pl.scan_lines` (one document per line, with a row index as document id),
`str.to_lowercase`, `str.replace_all(PUNCTUATION, "")`, `str.split(" ")`, explode, drop
empty tokens; bigrams pair each token with the next one of the same document; one
`group_by` counts occurrences (and, with --tf-idf, distinct documents); sort, head.
"""

import time

from bench.peers.common import PUNCTUATION, parse_args, write_result


def main(argv=None) -> int:
    args = parse_args(argv, __doc__)
    import polars as pl
    started = time.perf_counter()
    tokens = (pl.scan_lines(args.corpus, name="text", row_index_name="doc")
              .select("doc", pl.col("text").str.to_lowercase().str.replace_all(PUNCTUATION, "")
                      .str.split(" ").alias("token"))
              .explode("token")
              .filter(pl.col("token") != ""))
    if args.ngrams == 2:
        nxt = tokens.select("doc", "token", pl.col("doc").shift(-1).alias("next_doc"),
                            pl.col("token").shift(-1).alias("next_token"))
        bigrams = (nxt.filter(pl.col("doc") == pl.col("next_doc"))
                   .select("doc", (pl.col("token") + " " + pl.col("next_token")).alias("token")))
        tokens = pl.concat([tokens, bigrams])
    aggregates = [pl.len().alias("count")]
    if args.tf_idf:
        aggregates.append(pl.col("doc").n_unique().alias("doc_count"))
    top = (tokens.group_by("token").agg(aggregates)
           .sort(["count", "token"], descending=[True, True])
           .head(args.top_k))
    if args.tf_idf:
        documents = pl.scan_lines(args.corpus).select(pl.len()).collect().item()
        top = top.with_columns((1 + documents / (1 + pl.col("doc_count"))).log().alias("idf"))
    top = top.collect()
    write_result(args.result, "polars", pl.__version__, top["token"].to_list(), top["count"].to_list(),
                 top["doc_count"].to_list() if args.tf_idf else None,
                 top["idf"].to_list() if args.tf_idf else None,
                 documents if args.tf_idf else None, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
