#!/usr/bin/env bash
# Build the worker/launcher image (deploy/Dockerfile) and the Flex Template spec that points at it.
#   deploy/build_template.sh [CONFIG]            builds the image with Cloud Build (no local Docker needed)
#   LOCAL_DOCKER=1 deploy/build_template.sh      builds and pushes with the local Docker daemon instead
#   DRY_RUN=1 deploy/build_template.sh           prints the commands only
set -euo pipefail
# shellcheck source=deploy/common.sh
source "$(dirname "$0")/common.sh" "${1:-}"
cd "$REPO_ROOT"

if [[ "${LOCAL_DOCKER:-0}" == 1 ]]; then
  run docker build --file deploy/Dockerfile --tag "$IMAGE" .
  run docker push "$IMAGE"
else
  run gcloud builds submit . --project "$PROJECT" --region "$REGION" \
    --config deploy/cloudbuild.yaml --substitutions "_IMAGE=${IMAGE}"
fi

run gcloud dataflow flex-template build "$TEMPLATE_PATH" \
  --project "$PROJECT" \
  --image "$IMAGE" \
  --sdk-language PYTHON \
  --metadata-file deploy/metadata.json

echo "template $TEMPLATE_PATH -> image $IMAGE" >&2
