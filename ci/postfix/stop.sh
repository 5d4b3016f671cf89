#!/usr/bin/env bash
# Stop the Postfix started by ci/postfix/start.sh DIR.
#
# usage: ci/postfix/stop.sh DIR
#
# Sends SIGTERM to the master (which stops its children), waits up to 10 s,
# then SIGKILLs it and any Postfix daemon left in its process group (start.sh
# runs the master under setsid, so its PID is also the group id). Succeeds if
# nothing is running. Leaves DIR (queue, logs) in place.
set -euo pipefail

log() { printf 'postfix/stop.sh: %s\n' "$*" >&2; }

if [ $# -ne 1 ] || [ -z "$1" ]; then printf 'usage: %s DIR\n' "$0" >&2; exit 2; fi
case $1 in
  /*) DIR=$1 ;;
  *) DIR=$PWD/$1 ;;
esac
while [ "${#DIR}" -gt 1 ] && [ "${DIR%/}" != "$DIR" ]; do DIR=${DIR%/}; done

CONF_DIR=$DIR/etc

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
    *master*" -c $CONF_DIR"*) return 0 ;;
  esac
  return 1
}

# Postfix's daemon directory (where master and its children are executed from).
DAEMON_DIR=$(postconf -dh daemon_directory 2>/dev/null || echo /usr/lib/postfix/sbin)

# Live Postfix daemons in process group $1.
group_daemons() {
  local p f exe
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    f=$(stat_fields "$p") || continue
    read -r -a f <<< "$f"
    [ "${f[2]:-}" = "$1" ] || continue
    [ "${f[0]}" != Z ] || continue
    exe=$(readlink "/proc/$p/exe" 2>/dev/null || true)
    case $exe in
      "$DAEMON_DIR"/*) printf '%s\n' "$p" ;;
    esac
  done
}

PID=
for f in "$DIR/postfix.pid" "$DIR/spool/pid/master.pid"; do
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
    log "postfix master (pid $PID) did not stop within 10 s; sending SIGKILL"
    kill -KILL "$PID" 2>/dev/null || true
  fi
  stopped=1
fi

# Children left behind (e.g. the master was SIGKILLed): same process group.
left=$(group_daemons "$PID")
if [ -n "$left" ]; then
  log "killing leftover postfix processes: $(tr '\n' ' ' <<< "$left")"
  # shellcheck disable=SC2086 # one PID per word
  kill -KILL $left 2>/dev/null || true
  for _ in $(seq 1 50); do
    [ -z "$(group_daemons "$PID")" ] && break
    sleep 0.1
  done
  stopped=1
fi

rm -f "$DIR/postfix.pid"
if [ "$stopped" -eq 1 ]; then
  log "stopped postfix (pid $PID)"
else
  log "no running postfix for $DIR"
fi
