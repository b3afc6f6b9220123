"""prepro's single-machine peers for the text workloads, each "the obvious way" in its own
tool (Polars, DuckDB, Spark local): one program per tool, run by `bench.run` in a fresh
process under `bench.measure`. `common` holds what they share: Keras's standardization
rule as a regex, the command line, and the result file."""
