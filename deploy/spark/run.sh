#!/usr/bin/env bash
# prepro on Apache Spark through Beam's portable SparkRunner. Untested here: the Spark job
# server jar and a Spark cluster cannot be reached from the machines prepro is built on.
set -euo pipefail
: "${SPARK_MASTER:?spark://host:7077}" "${JOB_SERVER_JAR:?path to beam-runners-spark-3-job-server-2.77.0.jar}"
: "${IMAGE:?worker image, e.g. the one built by deploy/dataflow/Dockerfile}"
prepro analyze --spec "${SPEC:-spec.yaml}" --input "${INPUT:?}" --format "${FORMAT:-csv}" \
  --output "${OUTPUT:?}" \
  --runner SparkRunner --spark_master_url "$SPARK_MASTER" --spark_job_server_jar "$JOB_SERVER_JAR" \
  --environment_type DOCKER --environment_config "$IMAGE"
