#!/usr/bin/env bash
# The one entry point cron, systemd and Kubernetes call: the daily job of one project folder.
#
#   FUNNELVALUE_HOME  the project folder (holds config/; default: this script's checkout)
#   FUNNELVALUE_LOG   where the full log of every run goes (default state/funnelvalue.log in
#                     the project; "-" for stdout/stderr, as systemd and Kubernetes keep logs)
#
# Arguments are passed to `funnelvalue run`. The first run of a new deploy runs
# `funnelvalue doctor` first and stops there if it fails. A run that needs attention prints
# one line saying what it means (cron mails it when MAILTO is set); a run that went fine
# prints nothing. The exit code is the job's (README, "Exit codes"):
#   0 all sent · 1 sent, some rows invalid · 2 nothing sent: configuration or input ·
#   3 try later (rows pending) · 70 internal error (crash log) · 75 another run holds the lock ·
#   130/143 stopped by a signal after recording what Google acknowledged.
set -uo pipefail
home="${FUNNELVALUE_HOME:-$(cd "$(dirname "$0")/.." && pwd)}"
if ! cd "$home" 2>/dev/null; then
  echo "funnelvalue: project folder $home does not exist (FUNNELVALUE_HOME)" >&2
  exit 2
fi
export FUNNELVALUE_PROJECT_DIR="$PWD"
# The log keeps every run's lines (a terminal shows them only with -v).
export FUNNELVALUE_LOG_LEVEL="${FUNNELVALUE_LOG_LEVEL:-INFO}"
if [ -x .venv/bin/funnelvalue ]; then
  funnelvalue=.venv/bin/funnelvalue
else
  funnelvalue=funnelvalue
fi
log="${FUNNELVALUE_LOG:-state/funnelvalue.log}"
case $log in
  -) where="the output above" ;;
  /*) where=$log ;;
  *) where="$PWD/$log" ;;
esac

job() {  # the command, its output to the log (or straight through)
  if [ "$log" = "-" ]; then
    "$@"
  else
    { echo "=== $(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; "$@"; } >>"$log" 2>&1
  fi
}

if [ "$log" != "-" ] && ! mkdir -p "$(dirname "$log")"; then
  echo "funnelvalue: cannot create the log folder $(dirname "$log") in $home" >&2
  exit 2
fi
checked=state/.doctor-passed
if [ ! -e "$checked" ]; then
  job "$funnelvalue" doctor
  status=$?
  if [ $status -ne 0 ]; then
    echo "funnelvalue: first run of this deploy: doctor found problems, nothing was run" \
      "(exit $status; details in $where)" >&2
    exit $status
  fi
  mkdir -p state && touch "$checked" 2>/dev/null || true
fi
job "$funnelvalue" run "$@"
status=$?
case $status in
  0) exit 0 ;;
  1) meaning="sent; some rows hold invalid data to fix in the CRM" ;;
  2) meaning="nothing sent: configuration or unusable input" ;;
  3) meaning="try later: source, destination or ledger unavailable; rows kept pending" ;;
  70) meaning="internal error; the traceback is in the crash log" ;;
  75) meaning="skipped: another run holds the lock; nothing done" ;;
  130 | 143) meaning="stopped by a signal; what Google acknowledged is recorded" ;;
  *) meaning="failed" ;;
esac
echo "funnelvalue: $meaning (exit $status; details in $where)" >&2
exit $status
