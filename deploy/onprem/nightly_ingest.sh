#!/usr/bin/env bash
# One ingest run on a local machine, for cron or the systemd timer next to this file.
# Settings come from the environment (the systemd unit and the crontab read /etc/videorec/ingest.env):
#   VIDEOREC              the videorec executable (default /opt/videorec/.venv/bin/videorec)
#   VIDEOREC_INGEST_ARGS  the 'videorec ingest' flags, e.g. "--interactions /data/raw/pairs.csv --videos
#                         /data/raw/videos --dataset-root /data/datasets/microlens --keep 7"
set -euo pipefail

VIDEOREC=${VIDEOREC:-/opt/videorec/.venv/bin/videorec}
if [[ -z "${VIDEOREC_INGEST_ARGS:-}" ]]; then
  echo "nightly_ingest: VIDEOREC_INGEST_ARGS is empty (set it in /etc/videorec/ingest.env)" >&2
  exit 2
fi
read -r -a ingest_args <<<"$VIDEOREC_INGEST_ARGS"

echo "nightly_ingest: start $(date -u +%Y-%m-%dT%H:%M:%SZ): $VIDEOREC ingest ${ingest_args[*]}" >&2
status=0
"$VIDEOREC" ingest "${ingest_args[@]}" || status=$?
echo "nightly_ingest: end $(date -u +%Y-%m-%dT%H:%M:%SZ), exit status $status" >&2
exit "$status"
