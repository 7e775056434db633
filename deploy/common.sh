# shellcheck shell=bash
# Shared by the deploy scripts: loads the config file and derives names from it.
# Usage (inside a script): source "$(dirname "$0")/common.sh" "${1:-}"

CONFIG_FILE=${1:-$(dirname "${BASH_SOURCE[0]}")/config.env}
if [[ ! -f "$CONFIG_FILE" ]]; then
  echo "config file $CONFIG_FILE not found: copy deploy/config.example.env to deploy/config.env and edit it" >&2
  exit 2
fi
# shellcheck source=deploy/config.example.env
source "$CONFIG_FILE"

for required in PROJECT REGION BUCKET REPOSITORY IMAGE_TAG SERVICE_ACCOUNT MAX_WORKERS MACHINE_TYPE; do
  if [[ -z "${!required:-}" ]]; then
    echo "$CONFIG_FILE: $required is not set" >&2
    exit 2
  fi
done

IMAGE="${REGION}-docker.pkg.dev/${PROJECT}/${REPOSITORY}/videorec-ingest:${IMAGE_TAG}"
TEMPLATE_PATH="gs://${BUCKET}/templates/videorec-ingest.json"
STAGING_LOCATION="gs://${BUCKET}/staging"
TEMP_LOCATION="gs://${BUCKET}/temp"
DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$DEPLOY_DIR")
export IMAGE TEMPLATE_PATH STAGING_LOCATION TEMP_LOCATION DEPLOY_DIR REPO_ROOT

# Run a command, or only print it (shell-quoted) when DRY_RUN=1.
run() {
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# name=value lines: every PARAM_<name> of the config, plus the worker image.
template_parameters() {
  local var
  for var in $(compgen -v PARAM_); do
    printf '%s=%s\n' "${var#PARAM_}" "${!var}"
  done
  printf 'sdk_container_image=%s\n' "$IMAGE"
}
