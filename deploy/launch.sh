#!/usr/bin/env bash
# Launch one ingest job from the Flex Template now (a manual run or a backfill).
#   deploy/launch.sh [CONFIG]
#   DRY_RUN=1 deploy/launch.sh      prints the gcloud command only
set -euo pipefail
# shellcheck source=deploy/common.sh
source "$(dirname "$0")/common.sh" "${1:-}"

# gcloud splits --parameters on commas; '^~^' switches the separator to '~' so values may hold commas.
parameters="^~^$(template_parameters | paste -sd '~' -)"

run gcloud dataflow flex-template run "videorec-ingest-$(date -u +%Y%m%d-%H%M%S)" \
  --project "$PROJECT" \
  --region "$REGION" \
  --template-file-gcs-location "$TEMPLATE_PATH" \
  --staging-location "$STAGING_LOCATION" \
  --temp-location "$TEMP_LOCATION" \
  --service-account-email "$SERVICE_ACCOUNT" \
  --max-workers "$MAX_WORKERS" \
  --worker-machine-type "$MACHINE_TYPE" \
  --parameters "$parameters"
