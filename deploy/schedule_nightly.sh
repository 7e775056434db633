#!/usr/bin/env bash
# Create (or update) the Cloud Scheduler job that launches the Flex Template every night.
#   deploy/schedule_nightly.sh [CONFIG]
#   DRY_RUN=1 deploy/schedule_nightly.sh     prints the launch request body and the gcloud command only
set -euo pipefail
# shellcheck source=deploy/common.sh
source "$(dirname "$0")/common.sh" "${1:-}"

JOB=videorec-nightly-ingest
export JOB SERVICE_ACCOUNT MAX_WORKERS MACHINE_TYPE
BODY_FILE=$(mktemp)
trap 'rm -f "$BODY_FILE"' EXIT

# The request body of projects.locations.flexTemplates.launch. A fixed job name means Dataflow refuses
# to start a second copy while last night's job still runs (the dataset-root lease refuses it too).
template_parameters | python3 -c '
import json, os, sys
parameters = dict(line.rstrip("\n").split("=", 1) for line in sys.stdin if line.strip())
env = os.environ
body = {
    "launchParameter": {
        "jobName": env["JOB"],
        "containerSpecGcsPath": env["TEMPLATE_PATH"],
        "parameters": parameters,
        "environment": {
            "stagingLocation": env["STAGING_LOCATION"],
            "tempLocation": env["TEMP_LOCATION"],
            "serviceAccountEmail": env["SERVICE_ACCOUNT"],
            "maxWorkers": int(env["MAX_WORKERS"]),
            "machineType": env["MACHINE_TYPE"],
        },
    }
}
json.dump(body, sys.stdout, indent=2)
' >"$BODY_FILE"

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  cat "$BODY_FILE"
  printf '\n'
fi

verb=create
if [[ "${DRY_RUN:-0}" != 1 ]] && gcloud scheduler jobs describe "$JOB" --project "$PROJECT" --location "$REGION" >/dev/null 2>&1; then
  verb=update
fi

run gcloud scheduler jobs "$verb" http "$JOB" \
  --project "$PROJECT" \
  --location "$REGION" \
  --schedule "${SCHEDULE:-0 2 * * *}" \
  --time-zone "${TIME_ZONE:-Etc/UTC}" \
  --uri "https://dataflow.googleapis.com/v1b3/projects/${PROJECT}/locations/${REGION}/flexTemplates:launch" \
  --http-method POST \
  --headers "Content-Type=application/json" \
  --message-body-from-file "$BODY_FILE" \
  --oauth-service-account-email "$SERVICE_ACCOUNT" \
  --oauth-token-scope "https://www.googleapis.com/auth/cloud-platform" \
  --attempt-deadline 320s \
  --max-retry-attempts 1
