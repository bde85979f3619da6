#!/usr/bin/env bash
# The one entry point cron, systemd and Kubernetes call: the daily job, from the project folder.
# Arguments are passed to `funnelvalue run` (e.g. --destination csv). The exit code is the
# job's (README, "Exit codes"), with one line on stderr saying what it means:
#   0 all sent · 1 sent, some rows invalid · 2 nothing sent: configuration or input ·
#   3 try later (rows pending) · 70 internal error (crash log) · 75 another run holds the lock ·
#   130/143 stopped by a signal after recording what Google acknowledged.
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
  1) echo "funnelvalue: sent; some rows hold invalid data to fix in the CRM (listed above)" >&2 ;;
  2) echo "funnelvalue: nothing sent: configuration or unusable input (see the error above)" >&2 ;;
  3) echo "funnelvalue: try later: source, destination or ledger unavailable; rows kept pending" >&2 ;;
  70) echo "funnelvalue: internal error; the traceback is in the crash log named above" >&2 ;;
  75) echo "funnelvalue: skipped: another run holds the lock (named above); nothing done" >&2 ;;
  130 | 143) echo "funnelvalue: stopped by a signal; what Google acknowledged is recorded" >&2 ;;
  *) echo "funnelvalue: failed with exit code $status" >&2 ;;
esac
exit $status
