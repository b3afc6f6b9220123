"""TensorFlow Transform's equivalent of the analysis, in its own fresh process.

    python -m bench.tft_job --corpus C.txt --config '{"max_tokens": 50000, "output_mode": "tf_idf", "ngrams": 2}' \
        --output DIR --result out.json [--workers 1]

A `preprocessing_fn` that tokenizes like TextVectorization's defaults (lower case,
Keras's punctuation regex, whitespace split, the same n-grams joined by " "), then
`tft.compute_and_apply_vocabulary` keeping as many tokens as the Keras layer learns
and, for tf_idf, `tft.tfidf`. `tft_beam.AnalyzeDataset` runs on Beam's local
FnApiRunner (DirectRunner would try to download Prism) over `beam.io.ReadFromText`,
and the transform_fn is written to `--output` (prepro writes its artifacts too).
Only the pipeline run is timed, not the imports. This is a separate process because
importing tensorflow_transform sets TF_USE_LEGACY_KERAS=1.
"""

import argparse
import json
import os
import resource
import time

KERAS_PUNCTUATION = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'
VOCABULARY_NAME = "vocabulary"
BATCH = 1000  # lines per Arrow RecordBatch


def learned_tokens(config: dict) -> int:
    """How many tokens TextVectorization learns: max_tokens minus its reserved
    indices (the OOV token, and the mask "" in int mode)."""
    reserved = 2 if config.get("output_mode", "int") == "int" else 1
    return config["max_tokens"] - reserved


def ngram_range(ngrams):
    """Keras's `ngrams` (int n: widths 1..n; tuple: those widths) as tft's (min, max)."""
    widths = tuple(range(1, ngrams + 1)) if isinstance(ngrams, int) else tuple(ngrams)
    if widths != tuple(range(min(widths), max(widths) + 1)):
        raise ValueError(f"tft.ngrams takes a contiguous range of widths; Keras ngrams={ngrams!r} is not one")
    return min(widths), max(widths)


def make_preprocessing_fn(config: dict):
    """The tft preprocessing_fn for a TextVectorization config (default standardize/split)."""
    import tensorflow as tf
    import tensorflow_transform as tft
    unsupported = {k: v for k, v in config.items() if k in ("standardize", "split", "vocabulary")}
    if unsupported:
        raise ValueError(f"the TFT benchmark mirrors only the default standardize/split; got {unsupported}")
    top_k = learned_tokens(config)

    def preprocessing_fn(inputs):
        text = tf.strings.lower(inputs["text"])
        text = tf.strings.regex_replace(text, KERAS_PUNCTUATION, "")
        tokens = tf.strings.split(text).to_sparse()
        if config.get("ngrams"):
            tokens = tft.ngrams(tokens, ngram_range=ngram_range(config["ngrams"]), separator=" ")
        ids = tft.compute_and_apply_vocabulary(tokens, top_k=top_k, num_oov_buckets=1,
                                               vocab_filename=VOCABULARY_NAME)
        if config.get("output_mode") != "tf_idf":
            return {"ids": ids}
        index, weight = tft.tfidf(ids, vocab_size=top_k + 1)
        return {"index": index, "weight": weight}

    return preprocessing_fn


def run_pipeline(corpus: str, output: str, config: dict, workers: int, feed: str) -> float:
    """AnalyzeDataset over the corpus, transform_fn written to `output`; seconds taken."""
    import apache_beam as beam
    import tensorflow_transform.beam as tft_beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    mode = "in_memory" if workers == 1 else "multi_processing"
    options = PipelineOptions([f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"])
    preprocessing_fn = make_preprocessing_fn(config)
    start = time.perf_counter()
    with beam.Pipeline(runner=FnApiRunner(), options=options) as pipeline:
        with tft_beam.Context(temp_dir=os.path.join(output, "tmp")):
            lines = pipeline | "Read" >> beam.io.ReadFromText(corpus, coder=beam.coders.BytesCoder())
            dataset = (record_batches if feed == "arrow" else instance_dicts)(lines)
            transform_fn = dataset | "Analyze" >> tft_beam.AnalyzeDataset(preprocessing_fn)
            _ = transform_fn | "Write" >> tft_beam.WriteTransformFn(output)
    return time.perf_counter() - start


def instance_dicts(lines):
    """(PCollection of {"text": line}, DatasetMetadata): TFT's classic input."""
    import apache_beam as beam
    import tensorflow as tf
    from tensorflow_transform.tf_metadata import dataset_metadata, schema_utils
    metadata = dataset_metadata.DatasetMetadata(
        schema_utils.schema_from_feature_spec({"text": tf.io.FixedLenFeature([], tf.string)}))
    return lines | "ToInstance" >> beam.Map(lambda line: {"text": line}), metadata


def record_batches(lines):
    """(PCollection of Arrow RecordBatches, TensorAdapterConfig): the TFXIO input TFT
    recommends for performance; each line is one dense scalar string `text`."""
    import apache_beam as beam
    import pyarrow as pa
    from tensorflow_metadata.proto.v0 import schema_pb2
    from tfx_bsl.public import tfxio
    column = pa.large_list(pa.large_binary())
    schema = pa.schema([("text", column)])
    dense = schema_pb2.TensorRepresentation.DenseTensor(column_name="text", shape=schema_pb2.FixedShape())
    config = tfxio.TensorAdapterConfig(schema, {"text": schema_pb2.TensorRepresentation(dense_tensor=dense)})

    def to_batch(batch):
        return pa.RecordBatch.from_arrays([pa.array([[line] for line in batch], column)], schema=schema)

    batches = (lines
               | "Batch" >> beam.BatchElements(min_batch_size=BATCH, max_batch_size=BATCH)
               | "ToRecordBatch" >> beam.Map(to_batch))
    return batches, config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--config", required=True, help="TextVectorization options as JSON")
    parser.add_argument("--output", required=True, help="directory for the transform_fn")
    parser.add_argument("--result", required=True, help="where to write the JSON result")
    parser.add_argument("--workers", type=int, default=1, help="FnApiRunner workers (1: in-process)")
    parser.add_argument("--feed", choices=("arrow", "dicts"), default="arrow",
                        help="input as Arrow RecordBatches (TFXIO, faster) or instance dicts")
    args = parser.parse_args(argv)

    import tensorflow_transform as tft
    seconds = run_pipeline(args.corpus, args.output, json.loads(args.config), args.workers,
                           args.feed)
    vocabulary = os.path.join(args.output, "transform_fn", "assets", VOCABULARY_NAME)
    result = {"pipeline_s": seconds, "tft_version": tft.__version__, "workers": args.workers, "feed": args.feed,
              "vocabulary_file": vocabulary if os.path.exists(vocabulary) else None,
              "peak_self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6}
    with open(args.result, "w") as f:
        json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
