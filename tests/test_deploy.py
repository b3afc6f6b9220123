"""What can be tested of the deploy/ recipes without a cloud account or a cluster:
the image installs the tested lock, the Flex Template metadata maps onto the CLI, and
every recipe's options parse into the intended Beam settings."""

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from apache_beam.options.pipeline_options import (FlinkRunnerOptions, GoogleCloudOptions, PipelineOptions,
                                                  PortableOptions, SparkRunnerOptions, StandardOptions,
                                                  WorkerOptions)

from pipelines import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
ENV = {"PROJECT": "p", "REGION": "europe-west4", "BUCKET": "b", "SERVICE_ACCOUNT": "sa@p.iam.gserviceaccount.com",
       "REPO": "prepro", "FLINK_MASTER": "flink:8081", "SPARK_MASTER": "spark://spark:7077",
       "JOB_SERVER_JAR": "/jars/job-server.jar", "IMAGE": "img:1", "INPUT": "gs://b/data/*.csv", "OUTPUT": "gs://b/out"}


def _lock(name="requirements.lock"):
    with open(os.path.join(ROOT, name)) as f:
        return dict(line.strip().split("==") for line in f if "==" in line and not line.startswith("#"))


def _prepro_command(script, block=None):
    """The `prepro analyze ...` command of a run.sh (of one case block), variables filled in."""
    text = open(os.path.join(DEPLOY, script)).read()
    env = dict(ENV)
    defined = re.search(r'^IMAGE="(.*)"$', text, re.M)  # a variable the script sets itself
    if defined:
        env["IMAGE"] = re.sub(r"\$\{(\w+)\}", lambda m: ENV[m.group(1)], defined.group(1))
    if block:
        text = text.split(f"{block})", 1)[1].split(";;", 1)[0]
    command = re.search(r"prepro analyze .*?(?:\n(?!\s*--|\s+\S+\s*\\)|$)", text, re.S).group(0)
    command = command.replace("\\\n", " ")
    command = re.sub(r'"?\$\{(\w+)(:-[^}]*)?\}"?', lambda m: env.get(m.group(1), (m.group(2) or ":-x")[2:]), command)
    command = re.sub(r'"?\$(\w+)"?', lambda m: env[m.group(1)], command)
    return shlex.split(command)[2:]


def test_image_installs_the_tested_lock():
    dockerfile = open(os.path.join(DEPLOY, "dataflow", "Dockerfile")).read()
    lock = _lock()
    base = re.search(r"FROM apache/beam_python(\d)\.(\d+)_sdk:(\S+)", dockerfile)
    assert base.group(3) == lock["apache-beam"], "the SDK image must match the pinned Beam"
    assert (int(base.group(1)), int(base.group(2))) == sys.version_info[:2]
    assert "pip install --no-cache-dir -r requirements.lock" in dockerfile
    # The lock resolves: it is exactly what this environment runs, and pip finds it consistent.
    installed = {name: importlib.metadata.version(name) for name in lock}
    assert installed == lock
    # The training-side backends (not in the worker image) are what the tests ran under.
    backends = _lock("requirements-backends.lock")
    assert {name: importlib.metadata.version(name) for name in backends} == backends
    assert not set(backends) & set(lock)
    check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def test_flex_template_metadata_maps_onto_the_cli():
    metadata = json.load(open(os.path.join(DEPLOY, "dataflow", "metadata.json")))
    assert metadata["name"] and metadata["description"]
    names = [p["name"] for p in metadata["parameters"]]
    assert len(names) == len(set(names))
    for p in metadata["parameters"]:
        assert {"name", "label", "helpText"} <= set(p) and set(p) <= {"name", "label", "helpText", "regexes",
                                                                       "isOptional", "paramType"}
        for regex in p.get("regexes", []):
            re.compile(regex)
    required = {p["name"] for p in metadata["parameters"] if not p.get("isOptional")}
    assert required == {"spec", "input", "format", "output"}
    spec = importlib.util.spec_from_file_location("flex_main", os.path.join(DEPLOY, "dataflow", "main.py"))
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    argv = main.to_cli(["--spec=gs://b/s.yaml", "--input=gs://b/d/*.csv", "--format=csv", "--output=gs://b/o",
                        "--golden_rows=8", "--shards=32", "--runner=DataflowRunner", "--region=europe-west4"])
    args, beam_args = cli.build_parser().parse_known_args(argv)
    assert (args.command, args.spec, args.format, args.golden_rows, args.shards) == ("analyze", "gs://b/s.yaml",
                                                                                     "csv", 8, 32)
    assert beam_args == ["--runner=DataflowRunner", "--region=europe-west4"]
    assert set(names) == set(main.PREPRO_OPTIONS)  # every parameter reached the CLI above


def test_dataflow_command_options():
    argv = _prepro_command("dataflow/run.sh", "run")
    args, beam_args = cli.build_parser().parse_known_args(["analyze", *argv])
    assert args.output == "gs://b/artifacts"
    options = PipelineOptions(beam_args)
    gcp, workers = options.view_as(GoogleCloudOptions), options.view_as(WorkerOptions)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert (gcp.project, gcp.region, gcp.temp_location, gcp.service_account_email) == \
        ("p", "europe-west4", "gs://b/tmp", "sa@p.iam.gserviceaccount.com")
    assert (workers.machine_type, workers.autoscaling_algorithm, workers.num_workers, workers.max_num_workers) == \
        ("n2-standard-8", "THROUGHPUT_BASED", 4, 64)
    assert workers.sdk_container_image == "europe-west4-docker.pkg.dev/p/prepro/prepro:0.1.0"


@pytest.mark.parametrize("script, view, expected", [
    ("flink/run.sh", FlinkRunnerOptions, {"flink_master": "flink:8081", "flink_job_server_jar": "/jars/job-server.jar",
                                          "parallelism": 16}),
    ("spark/run.sh", SparkRunnerOptions, {"spark_master_url": "spark://spark:7077",
                                          "spark_job_server_jar": "/jars/job-server.jar"}),
])
def test_portable_runner_command_options(script, view, expected):
    args, beam_args = cli.build_parser().parse_known_args(["analyze", *_prepro_command(script)])
    options = PipelineOptions(beam_args)
    assert {k: getattr(options.view_as(view), k) for k in expected} == expected
    portable = options.view_as(PortableOptions)
    assert (portable.environment_type, portable.environment_config) == ("DOCKER", "img:1")
