#!/usr/bin/env bash
# The preprocessing workflow (ingestion + end-of-day load) for one trading day.
# Usage: scripts/run_preprocessing.sh [YYYY-MM-DD]   (default: the last completed trading day)
exec "$(dirname "${BASH_SOURCE[0]}")/_run_workflow.sh" preprocessing "$@"
