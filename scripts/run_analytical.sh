#!/usr/bin/env bash
# The analytical workflow (the EOD quote report) for one trading day. Refused
# unless preprocessing succeeded for the day and its recent landed days.
# Usage: scripts/run_analytical.sh [YYYY-MM-DD]   (default: the last completed trading day)
exec "$(dirname "${BASH_SOURCE[0]}")/_run_workflow.sh" analytical "$@"
