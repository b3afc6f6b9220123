"""DuckDB peer: the text workloads' top-k the obvious way, as one SQL query.

    python -m bench.peers.duckdb_job --corpus C.txt --top-k 49998 [--ngrams 2 --tf-idf] --result out.json

`read_csv` with a newline delimiter and no quoting (one document per line, an empty line
is a NULL document), `lower`, `regexp_replace(..., PUNCTUATION, '', 'g')`,
`string_split(..., ' ')` without empty tokens; bigrams with `list_transform` over
adjacent positions; `unnest` and `GROUP BY token` to count; with --tf-idf, documents
numbered with `row_number() OVER ()` and counted per (token, document) first, then per
token; `ORDER BY count DESC, token DESC LIMIT k`.
"""

import time

from bench.peers.common import PUNCTUATION, parse_args, write_result


def query(corpus: str, top_k: int, ngrams: int, tf_idf: bool) -> str:
    literal = lambda s: "'" + s.replace("'", "''") + "'"  # noqa: E731
    grams = ("list_concat(words, list_transform(range(1, len(words)), lambda i: words[i] || ' ' || words[i + 1]))"
             if ngrams == 2 else "words")
    docs = f"""
    WITH docs AS (
        SELECT row_number() OVER () AS doc,
               list_filter(string_split(regexp_replace(lower(text), {literal(PUNCTUATION)}, '', 'g'), ' '),
                           lambda t: t <> '') AS words
        FROM read_csv({literal(corpus)}, header = false, columns = {{'text': 'VARCHAR'}},
                      delim = '\\n', quote = '', escape = '')),
    tokens AS (SELECT doc, unnest({grams}) AS token FROM docs)"""
    if not tf_idf:
        return docs.replace("row_number() OVER () AS doc,", "") .replace("SELECT doc, unnest", "SELECT unnest") + f"""
    SELECT token, count(*) AS count FROM tokens GROUP BY token ORDER BY count DESC, token DESC LIMIT {top_k}"""
    return docs + f""",
    per_document AS (SELECT token, doc, count(*) AS count FROM tokens GROUP BY token, doc),
    documents AS (SELECT count(*) AS n FROM docs)
    SELECT token, sum(count) AS count, count(*) AS doc_count, ln(1 + any_value(n) / (1 + count(*))) AS idf,
           any_value(n) AS n
    FROM per_document, documents GROUP BY token
    ORDER BY count DESC, token DESC LIMIT {top_k}"""


def main(argv=None) -> int:
    args = parse_args(argv, __doc__)
    import duckdb
    started = time.perf_counter()
    rows = duckdb.sql(query(args.corpus, args.top_k, args.ngrams, args.tf_idf)).fetchall()
    columns = list(zip(*rows)) if rows else [[]] * (5 if args.tf_idf else 2)
    write_result(args.result, "duckdb", duckdb.__version__, columns[0], columns[1],
                 columns[2] if args.tf_idf else None, columns[3] if args.tf_idf else None,
                 (rows[0][4] if rows else None) if args.tf_idf else None, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
