#!/usr/bin/env bash
# prepro on Apache Flink through Beam's portable FlinkRunner. Untested here: the Flink job
# server jar and a Flink cluster cannot be reached from the machines prepro is built on.
set -euo pipefail
: "${FLINK_MASTER:?host:8081}" "${JOB_SERVER_JAR:?path to beam-runners-flink-1.19-job-server-2.77.0.jar}"
: "${IMAGE:?worker image, e.g. the one built by deploy/dataflow/Dockerfile}"
prepro analyze --spec "${SPEC:-spec.yaml}" --input "${INPUT:?}" --format "${FORMAT:-csv}" \
  --output "${OUTPUT:?}" \
  --runner FlinkRunner --flink_master "$FLINK_MASTER" --flink_job_server_jar "$JOB_SERVER_JAR" \
  --parallelism 16 --environment_type DOCKER --environment_config "$IMAGE"
