#!/usr/bin/env bash
# prepro on Dataflow: build the image, run the job directly, or as a Flex Template.
# Untested from the machines prepro is built on (no cloud account); see README.md here.
set -euo pipefail
: "${PROJECT:?}" "${REGION:?}" "${BUCKET:?}" "${REPO:=prepro}" "${SERVICE_ACCOUNT:?}"
IMAGE="${REGION}-docker.pkg.dev/${PROJECT}/${REPO}/prepro:0.1.0"

case "${1:-}" in
  image)     # build and push the worker/launcher image (from the repository root)
    docker build -f deploy/dataflow/Dockerfile -t "$IMAGE" .
    docker push "$IMAGE" ;;
  run)       # submit the job from this machine (prepro installed locally)
    prepro analyze --spec "gs://${BUCKET}/spec.yaml" --input "gs://${BUCKET}/data/*.csv" --format csv \
      --output "gs://${BUCKET}/artifacts" \
      --runner DataflowRunner --project "$PROJECT" --region "$REGION" \
      --temp_location "gs://${BUCKET}/tmp" --staging_location "gs://${BUCKET}/staging" \
      --sdk_container_image "$IMAGE" --experiments use_runner_v2 \
      --machine_type n2-standard-8 --disk_size_gb 100 \
      --autoscaling_algorithm THROUGHPUT_BASED --num_workers 4 --max_num_workers 64 \
      --service_account_email "$SERVICE_ACCOUNT" ;;
  template)  # register the Flex Template, then launch it
    gcloud dataflow flex-template build "gs://${BUCKET}/templates/prepro.json" \
      --image "$IMAGE" --sdk-language PYTHON --metadata-file deploy/dataflow/metadata.json
    gcloud dataflow flex-template run "prepro-$(date +%Y%m%d-%H%M%S)" \
      --template-file-gcs-location "gs://${BUCKET}/templates/prepro.json" --region "$REGION" \
      --service-account-email "$SERVICE_ACCOUNT" --temp-location "gs://${BUCKET}/tmp" \
      --worker-machine-type n2-standard-8 --max-workers 64 \
      --additional-experiments use_runner_v2 \
      --parameters spec="gs://${BUCKET}/spec.yaml",input="gs://${BUCKET}/data/*.csv",format=csv,output="gs://${BUCKET}/artifacts",sdk_container_image="$IMAGE" ;;
  *) echo "usage: PROJECT=.. REGION=.. BUCKET=.. SERVICE_ACCOUNT=.. $0 image|run|template" >&2; exit 2 ;;
esac
