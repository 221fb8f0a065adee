#!/usr/bin/env bash
# Runs one daily workflow for one trading day through `dagster job execute`.
# Usage: scripts/_run_workflow.sh preprocessing|analytical [YYYY-MM-DD]
# Prints the job id and its final tracker status; exits 0 only on success.
set -uo pipefail

workflow="$1"
shift
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$root/.venv/bin/dagster" ]; then
  export PATH="$root/.venv/bin:$PATH"
fi
# Dagster's own run records: the operator's DAGSTER_HOME, else the local one.
if [ -z "${DAGSTER_HOME:-}" ]; then
  export DAGSTER_HOME="$root/var/dagster_home"
  mkdir -p "$DAGSTER_HOME"
  [ -f "$DAGSTER_HOME/dagster.yaml" ] || printf 'telemetry:\n  enabled: false\n' > "$DAGSTER_HOME/dagster.yaml"
fi
mkdir -p "$DAGSTER_HOME"

# Refusals before anything runs, each one line on stderr: a malformed setting or
# an unreachable Spark master, then a day that is not a trading-day partition.
capstone-jobs check-config || exit 2
if [ $# -ge 1 ]; then
  day="$1"
else
  day="$(capstone-jobs last-trading-day)" || exit 2
fi
capstone-jobs check-day "$day" || exit 2

job_id="${workflow}_${day}"
echo "job id: $job_id"
dagster job execute \
  -m capstone_assets.definitions \
  -j "${workflow}_job" \
  --tags "{\"dagster/partition\": \"$day\"}"
rc=$?

status="$(capstone-jobs status "$job_id")" || status="unknown"
if [ "$rc" -eq 0 ] && [ "$status" = "success" ]; then
  echo "$job_id: success"
  exit 0
fi
echo "$job_id: run failed or was refused (dagster exit code $rc); tracker status now: $status" >&2
capstone-jobs show "$job_id" >&2 || true
exit 1
