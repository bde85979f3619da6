#!/usr/bin/env bash
# The one entry point cron, systemd and Kubernetes call: the daily job, from the project folder.
# Arguments are passed to `funnelvalue run` (e.g. --destination csv). The exit code is the
# job's: 0 ok · 1 some rows rejected · 2 configuration error · 3 destination unavailable.
set -uo pipefail
cd "${FUNNELVALUE_HOME:-$(dirname "$0")/..}" || exit 2
if [ -x .venv/bin/funnelvalue ]; then
  funnelvalue=.venv/bin/funnelvalue
else
  funnelvalue=funnelvalue
fi
"$funnelvalue" run "$@"
status=$?
case $status in
  0) ;;
  1) echo "funnelvalue: done; some rows were rejected (listed above)" >&2 ;;
  2) echo "funnelvalue: configuration error; nothing was sent" >&2 ;;
  3) echo "funnelvalue: destination unavailable; rows kept pending for the next run" >&2 ;;
  *) echo "funnelvalue: failed with exit code $status" >&2 ;;
esac
exit $status
