#!/usr/bin/env bash
# Stop the Dovecot started by ci/dovecot/start.sh DIR.
#
# usage: ci/dovecot/stop.sh DIR
#
# Sends SIGTERM to the master (which stops its children), waits up to 10 s,
# then SIGKILLs it and any dovecot process left in its process group (start.sh
# runs the master under setsid, so its PID is also the group id). Succeeds if
# nothing is running.
set -euo pipefail

log() { printf 'dovecot/stop.sh: %s\n' "$*" >&2; }

if [ $# -ne 1 ] || [ -z "$1" ]; then printf 'usage: %s DIR\n' "$0" >&2; exit 2; fi
case $1 in
  /*) DIR=$1 ;;
  *) DIR=$PWD/$1 ;;
esac
while [ "${#DIR}" -gt 1 ] && [ "${DIR%/}" != "$DIR" ]; do DIR=${DIR%/}; done

CONF=$DIR/dovecot.conf

# "pid (comm) state ppid pgrp ..." -> fields after "comm": state ppid pgrp
stat_fields() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  printf '%s\n' "${stat##*) }"
}

# Alive and not a zombie.
alive() {
  local f
  f=$(stat_fields "$1") || return 1
  [ "${f%% *}" != Z ]
}

cmdline() { tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null || true; }

# The master started with DIR's config (guards against a recycled PID).
is_our_master() {
  case $(cmdline "$1") in
    *dovecot*"$CONF"*) return 0 ;;
  esac
  return 1
}

# Live dovecot processes in process group $1 (the master's children are named
# "dovecot-<instance>/<service>" or "dovecot/<service>").
group_dovecots() {
  local p f
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    f=$(stat_fields "$p") || continue
    read -r -a f <<< "$f"
    [ "${f[2]:-}" = "$1" ] || continue
    [ "${f[0]}" != Z ] || continue
    case $(cmdline "$p") in
      *dovecot*) printf '%s\n' "$p" ;;
    esac
  done
}

PID=
for f in "$DIR/dovecot.pid" "$DIR/run/master.pid"; do
  if [ -s "$f" ]; then
    PID=$(tr -dc '0-9' < "$f")
    [ -n "$PID" ] && break
  fi
done
if [ -z "$PID" ]; then
  log "no pid file in $DIR; nothing to stop"
  exit 0
fi

stopped=0
if alive "$PID" && is_our_master "$PID"; then
  kill -TERM "$PID" 2>/dev/null || true
  for _ in $(seq 1 100); do
    alive "$PID" || break
    sleep 0.1
  done
  if alive "$PID"; then
    log "dovecot (pid $PID) did not stop within 10 s; sending SIGKILL"
    kill -KILL "$PID" 2>/dev/null || true
  fi
  stopped=1
fi

# Children left behind (e.g. the master was SIGKILLed): same process group.
left=$(group_dovecots "$PID")
if [ -n "$left" ]; then
  log "killing leftover dovecot processes: $(tr '\n' ' ' <<< "$left")"
  # shellcheck disable=SC2086 # one PID per word
  kill -KILL $left 2>/dev/null || true
  for _ in $(seq 1 50); do
    [ -z "$(group_dovecots "$PID")" ] && break
    sleep 0.1
  done
  stopped=1
fi

rm -f "$DIR/dovecot.pid"
if [ "$stopped" -eq 1 ]; then
  log "stopped dovecot (pid $PID)"
else
  log "no running dovecot for $DIR"
fi
