#!/usr/bin/env bash
# Start a throw-away Dovecot (POP3 + IMAP) on 127.0.0.1 for mailcheck's
# integration tests.
#
# usage: ci/dovecot/start.sh DIR
#
# DIR is wiped and recreated (it must be empty, missing, or a DIR made by an
# earlier run of this script). Everything lives inside DIR: config, TLS
# cert/key, passwd file, maildirs, base_dir, state_dir and logs. A previous
# instance recorded in DIR is stopped first, so running this twice is fine.
#
# Installs dovecot-core, dovecot-pop3d and dovecot-imapd with apt-get (as
# root) when the dovecot binary is missing.
#
# On success DIR/env holds KEY=VALUE lines (no quoting; DIR may only contain
# [A-Za-z0-9_./-]) that scripts can `set -a; . DIR/env; set +a`, and
# DIR/messages.tsv describes the seeded messages.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

POP3_PORT=${MAILCHECK_DOVECOT_POP3_PORT:-10110}
POP3S_PORT=${MAILCHECK_DOVECOT_POP3S_PORT:-10995}
IMAP_PORT=${MAILCHECK_DOVECOT_IMAP_PORT:-10143}
IMAPS_PORT=${MAILCHECK_DOVECOT_IMAPS_PORT:-10993}
HOST=127.0.0.1
# A second plaintext IMAP listener where passwords need TLS first, so that
# Dovecot advertises LOGINDISABLED there. It sits on another loopback
# address because Dovecot picks settings by local address (a `local` block),
# and treats a connection whose two ends share one address as secure.
IMAP_LD_HOST=127.0.0.2
IMAP_LD_PORT=${MAILCHECK_DOVECOT_IMAP_LOGINDISABLED_PORT:-10144}
VMAIL_USER=mailcheck-vmail
# Fixed so that UIDVALIDITY, UIDs and POP3 UIDLs are the same on every run.
UIDVALIDITY=1700000000
MSG_EPOCH=1700000000
MARKER=.mailcheck-dovecot

log() { printf 'dovecot/start.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { printf 'usage: %s DIR\n' "$0" >&2; exit 2; }

[ $# -eq 1 ] || usage
[ -n "$1" ] || usage

# --- resolve and sanity-check DIR -------------------------------------------
case $1 in
  /*) DIR=$1 ;;
  *) DIR=$PWD/$1 ;;
esac
# Strip trailing slashes (but never reduce to empty).
while [ "${#DIR}" -gt 1 ] && [ "${DIR%/}" != "$DIR" ]; do DIR=${DIR%/}; done
[[ $DIR =~ ^[A-Za-z0-9_./-]+$ ]] \
  || die "DIR '$DIR' may only contain A-Z a-z 0-9 _ . / - (it is written unquoted to DIR/env and dovecot.conf)"
case /$DIR/ in
  */../*|*/./*) die "DIR '$DIR' must not contain . or .. components" ;;
esac
case $DIR in
  /|/bin|/boot|/dev|/etc|/home|/lib|/lib64|/opt|/proc|/root|/run|/sbin|/srv|/sys|/tmp|/usr|/var|/work)
    die "refusing to use '$DIR' as DIR" ;;
esac
# Unix sockets live in DIR/run/...; sun_path is limited to 108 bytes.
[ "${#DIR}" -le 70 ] || die "DIR '$DIR' is too long (max 70 chars, unix socket paths inside it must stay < 108)"

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, runs dovecot which drops privileges)"

# --- install dovecot if needed ----------------------------------------------
find_dovecot() {
  local b
  b=$(command -v dovecot 2>/dev/null || true)
  if [ -z "$b" ] && [ -x /usr/sbin/dovecot ]; then b=/usr/sbin/dovecot; fi
  printf '%s' "$b"
}

DOVECOT=$(find_dovecot)
if [ -z "$DOVECOT" ]; then
  log "dovecot not found; installing dovecot-core dovecot-pop3d dovecot-imapd"
  pkgs=(dovecot-core dovecot-pop3d dovecot-imapd)
  command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
  # Keep the package's maintainer scripts from starting the system-wide
  # dovecot (ports 110/143/993/995): policy-rc.d exit 101 = "action forbidden".
  policy_created=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  apt_log=$(mktemp /tmp/mailcheck-dovecot-apt.XXXXXX)
  rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${pkgs[@]}"
  } > "$apt_log" 2>&1 || rc=$?
  if [ "$policy_created" -eq 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$apt_log" >&2
    die "apt-get install ${pkgs[*]} failed (exit $rc); full output in $apt_log"
  fi
  rm -f "$apt_log"
  DOVECOT=$(find_dovecot)
  [ -n "$DOVECOT" ] || die "dovecot still not found after installing ${pkgs[*]}"
  # If something started the system instance anyway, stop it: we only want ours.
  if [ -s /run/dovecot/master.pid ]; then
    syspid=$(cat /run/dovecot/master.pid 2>/dev/null || true)
    if [ -n "$syspid" ] && kill -0 "$syspid" 2>/dev/null; then
      log "stopping system dovecot (pid $syspid) started by the package install"
      "$DOVECOT" -c /etc/dovecot/dovecot.conf stop 2>/dev/null || kill "$syspid" 2>/dev/null || true
    fi
  fi
fi
DOVECOT_DIR=$(dirname "$DOVECOT")
DOVECONF=$DOVECOT_DIR/doveconf
[ -x "$DOVECONF" ] || DOVECONF=$(command -v doveconf 2>/dev/null || true)
command -v openssl >/dev/null 2>&1 || die "openssl not found"
DOVECOT_VERSION=$("$DOVECOT" --version | awk '{print $1}')
log "using $DOVECOT (version $DOVECOT_VERSION)"

# --- stop a previous instance and recreate DIR ------------------------------
if [ -e "$DIR" ]; then
  [ -d "$DIR" ] || die "'$DIR' exists and is not a directory"
  if [ -e "$DIR/$MARKER" ]; then
    "$SCRIPT_DIR/stop.sh" "$DIR"
  elif [ -n "$(ls -A "$DIR")" ]; then
    die "'$DIR' is not empty and was not created by this script (no $MARKER); refusing to wipe it"
  fi
  rm -rf -- "$DIR"
fi

# Plain TCP connect check, no external tools: returns 0 if something listens.
port_open() {
  (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}
for p in "$POP3_PORT" "$POP3S_PORT" "$IMAP_PORT" "$IMAPS_PORT"; do
  if port_open "$p"; then
    die "$HOST:$p is already in use (another instance? run ci/dovecot/stop.sh on its DIR)"
  fi
done
if (exec 3<>"/dev/tcp/$IMAP_LD_HOST/$IMAP_LD_PORT") 2>/dev/null; then
  die "$IMAP_LD_HOST:$IMAP_LD_PORT is already in use (another instance? run ci/dovecot/stop.sh on its DIR)"
fi

mkdir -p "$DIR"
chmod 0755 "$DIR"   # login/auth processes run unprivileged and must traverse DIR
: > "$DIR/$MARKER"
mkdir -p "$DIR/state" "$DIR/mail"

# --- unprivileged owner of the mail ------------------------------------------
if ! id -u "$VMAIL_USER" >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin "$VMAIL_USER" >/dev/null 2>&1 || true
fi
if id -u "$VMAIL_USER" >/dev/null 2>&1; then
  MAIL_UID=$(id -u "$VMAIL_USER"); MAIL_GID=$(id -g "$VMAIL_USER")
else
  log "could not create user $VMAIL_USER; using nobody:nogroup for the mail"
  MAIL_UID=$(id -u nobody); MAIL_GID=$(getent group nogroup | cut -d: -f3)
fi
# The package creates dovecot/dovenull; fall back if they are missing.
if id -u dovecot >/dev/null 2>&1; then INTERNAL_USER=dovecot; else INTERNAL_USER=$VMAIL_USER; fi
if id -u dovenull >/dev/null 2>&1; then LOGIN_USER=dovenull; else LOGIN_USER=nobody; fi

# --- TLS: one self-signed cert, usable directly as the CA (--cacert) --------
# CA:FALSE and no keyUsage so that both OpenSSL (curl) and rustls/webpki
# (which rejects a CA:TRUE end-entity cert) accept it as its own trust anchor.
cat > "$DIR/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_leaf
[dn]
CN = localhost
[v3_leaf]
basicConstraints = critical, CA:FALSE
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:127.0.0.2
subjectKeyIdentifier = hash
EOF
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
  -config "$DIR/openssl.cnf" -keyout "$DIR/key.pem" -out "$DIR/cert.pem" >/dev/null 2>&1 \
  || die "openssl could not create the certificate"
chmod 0600 "$DIR/key.pem"
chmod 0644 "$DIR/cert.pem"

# --- users -------------------------------------------------------------------
# name:password:uid:gid:gecos:home:shell  (passwd-file, scheme PLAIN)
# "selfcheck" (empty INBOX) is only used by the login self-check below, so
# that alice's and bob's mailboxes are untouched (e.g. \Recent) when tests run.
# "carol" (empty INBOX) receives the mail the SMTP tests send through Postfix,
# so deliveries never change what the POP3/IMAP tests count.
declare -A PASSWORDS=([alice]=alice-secret-pw [bob]=bob-secret-pw [carol]=carol-secret-pw [selfcheck]=selfcheck-pw)
USERS=(alice bob)
: > "$DIR/users"
for u in "${USERS[@]}" carol selfcheck; do
  printf '%s:{PLAIN}%s:%s:%s::%s::\n' "$u" "${PASSWORDS[$u]}" "$MAIL_UID" "$MAIL_GID" "$DIR/mail/$u" >> "$DIR/users"
done
chmod 0644 "$DIR/users"

# --- seed maildirs -------------------------------------------------------------
# Files are LF-only as maildir expects; Dovecot sends CRLF over POP3/IMAP.
# Names are deterministic ("<time>.M<n>P1Q<n>.mailcheck,S=<size>,W=<crlf size>:2,")
# and dovecot-uidlist is pre-written, so UIDs/UIDVALIDITY/UIDLs are stable.
msg_headers() { # user n epoch subject
  printf 'From: Mailcheck Sender <sender@mailcheck.test>\n'
  printf 'To: %s <%s@mailcheck.test>\n' "$1" "$1"
  printf 'Subject: %s\n' "$4"
  printf 'Date: %s\n' "$(LC_ALL=C date -u -R -d "@$3")"
  printf 'Message-ID: <msg%s.%s@mailcheck.test>\n' "$2" "$1"
  printf 'MIME-Version: 1.0\n'
  printf 'Content-Type: text/plain; charset=us-ascii\n'
  printf '\n'
}
msg_body() { # user n
  case $2 in
    1) printf 'Hello %s,\n\nThis is a short test message from mailcheck.\n\nBye.\n' "$1" ;;
    2) printf 'The following lines start with dots and must be dot-stuffed.\n'
       printf '.\n..\n.hidden\n...\n. dot and space\n.\n'
       printf 'Last line of the dot test.\n' ;;
    3) awk 'BEGIN { for (i = 1; i <= 3200; i++)
                      printf "line %05d: ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxy\n", i }' ;;
    4) : ;; # empty body: headers and the blank separator line only
  esac
}
SUBJECTS=(
  ""
  "mailcheck test 1: short message"
  "mailcheck test 2: dot-stuffing lines"
  "mailcheck test 3: large body (about 200 KB)"
  "mailcheck test 4: empty body"
)
DESCRIPTIONS=("" short dot-lines large empty-body)
NMSG=4

printf 'user\tmsgnum\tuid\tuidl\tpop3_size\tfile_size\tkind\tsubject\n' > "$DIR/messages.tsv"
for u in "${USERS[@]}"; do
  md=$DIR/mail/$u/Maildir
  mkdir -p "$md/cur" "$md/new" "$md/tmp"
  guid=$(printf 'mailcheck-inbox-%s' "$u" | md5sum | cut -c1-32)
  uidlist="3 V$UIDVALIDITY N$((NMSG + 1)) G$guid"$'\n'
  for n in $(seq 1 "$NMSG"); do
    epoch=$((MSG_EPOCH + n * 60))
    tmp=$md/tmp/seed.$n
    { msg_headers "$u" "$n" "$epoch" "${SUBJECTS[$n]}"; msg_body "$u" "$n"; } > "$tmp"
    size=$(wc -c < "$tmp")
    lines=$(wc -l < "$tmp")
    vsize=$((size + lines))   # every line ends in LF -> CRLF adds one byte per line
    base="$epoch.M${n}P1Q$n.mailcheck"
    mv "$tmp" "$md/cur/$base,S=$size,W=$vsize:2,"
    touch -d "@$epoch" "$md/cur/$base,S=$size,W=$vsize:2,"
    uidlist+="$n :$base,S=$size,W=$vsize"$'\n'
    uidl=$(printf "%08x%08x" "$n" "$UIDVALIDITY")   # Dovecot prints %X in lowercase
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$u" "$n" "$n" "$uidl" "$vsize" "$size" \
      "${DESCRIPTIONS[$n]}" "${SUBJECTS[$n]}" >> "$DIR/messages.tsv"
  done
  printf '%s' "$uidlist" > "$md/dovecot-uidlist"
done
for u in selfcheck carol; do
  mkdir -p "$DIR/mail/$u/Maildir/cur" "$DIR/mail/$u/Maildir/new" "$DIR/mail/$u/Maildir/tmp"
done
chown -R "$MAIL_UID:$MAIL_GID" "$DIR/mail"
chmod -R go-rwx "$DIR/mail"

# --- config --------------------------------------------------------------------
SSL_DH_LINE="# ssl_dh: not set (only ECDHE key exchange)"
if [ -r /usr/share/dovecot/dh.pem ]; then
  SSL_DH_LINE="ssl_dh = </usr/share/dovecot/dh.pem"
fi

cat > "$DIR/dovecot.conf" <<EOF
# Generated by ci/dovecot/start.sh for mailcheck integration tests.
# Standalone: nothing from /etc/dovecot is included.
protocols = pop3 imap
listen = $HOST, $IMAP_LD_HOST
instance_name = mailcheck-dovecot
base_dir = $DIR/run
state_dir = $DIR/state
log_path = $DIR/dovecot.log
info_log_path = $DIR/dovecot.log
debug_log_path = $DIR/dovecot.log

default_internal_user = $INTERNAL_USER
default_login_user = $LOGIN_USER
default_process_limit = 256
default_client_limit = 2000
first_valid_uid = $MAIL_UID
first_valid_gid = $MAIL_GID

mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
  separator = /
}

# Authentication: plaintext allowed without TLS; no delays after failures.
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
auth_cache_size = 0
auth_verbose = yes
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DIR/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $DIR/users
}

ssl = yes
ssl_cert = <$DIR/cert.pem
ssl_key = <$DIR/key.pem
ssl_min_protocol = TLSv1.2
$SSL_DH_LINE

pop3_uidl_format = %08Xu%08Xv

protocol pop3 {
  mail_max_userip_connections = 1000
}
protocol imap {
  mail_max_userip_connections = 1000
}

service pop3-login {
  inet_listener pop3 {
    address = $HOST
    port = $POP3_PORT
  }
  inet_listener pop3s {
    address = $HOST
    port = $POP3S_PORT
    ssl = yes
  }
}
service imap-login {
  inet_listener imap {
    address = $HOST
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = $HOST
    port = $IMAPS_PORT
    ssl = yes
  }
  inet_listener imap_logindisabled {
    address = $IMAP_LD_HOST
    port = $IMAP_LD_PORT
  }
}
# Connections to $IMAP_LD_HOST may only log in after STARTTLS (LOGINDISABLED).
local $IMAP_LD_HOST {
  disable_plaintext_auth = yes
}
# Disable the per-IP auth penalty (logins delayed up to 15 s after a failed
# password from the same IP): auth cannot talk to anvil-auth-penalty.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
# SMTP AUTH for ci/postfix: Postfix (user postfix) asks Dovecot to check passwords.
service auth {
  unix_listener auth-postfix {
    mode = 0666
  }
}
EOF

if [ -n "$DOVECONF" ]; then
  "$DOVECONF" -c "$DIR/dovecot.conf" -n > "$DIR/doveconf-n.txt" 2>&1 \
    || { cat "$DIR/doveconf-n.txt" >&2; die "dovecot.conf does not parse"; }
fi

# --- start ---------------------------------------------------------------------
# No job control in a script: the background child is not a group leader, so
# setsid does not fork and $! is dovecot's own PID (and its process group id).
setsid nohup "$DOVECOT" -F -c "$DIR/dovecot.conf" > "$DIR/dovecot.out" 2>&1 < /dev/null &
PID=$!
printf '%s\n' "$PID" > "$DIR/dovecot.pid"

show_logs() {
  log "--- tail $DIR/dovecot.out ---"
  tail -n 30 "$DIR/dovecot.out" >&2 2>/dev/null || true
  log "--- tail $DIR/dovecot.log ---"
  tail -n 30 "$DIR/dovecot.log" >&2 2>/dev/null || true
}

# Read the first line the server sends on HOST:PORT (CR stripped).
greeting() {
  (
    exec 3<>"/dev/tcp/$HOST/$1" || exit 1
    IFS= read -r -t 3 line <&3 || exit 1
    printf '%s' "${line%$'\r'}"
  ) 2>/dev/null
}

deadline=$((SECONDS + 20))
while :; do
  if ! kill -0 "$PID" 2>/dev/null; then
    show_logs
    die "dovecot exited during startup"
  fi
  g=$(greeting "$POP3_PORT" || true)
  case $g in
    "+OK"*) break ;;
  esac
  if [ "$SECONDS" -ge "$deadline" ]; then
    show_logs
    die "no +OK greeting on $HOST:$POP3_PORT within 20 s (last: '${g:-nothing}')"
  fi
  sleep 0.2
done
for p in "$POP3S_PORT" "$IMAP_PORT" "$IMAPS_PORT"; do
  port_open "$p" || { show_logs; die "dovecot answers on $POP3_PORT but not on $HOST:$p"; }
done
(exec 3<>"/dev/tcp/$IMAP_LD_HOST/$IMAP_LD_PORT") 2>/dev/null \
  || { show_logs; die "dovecot answers on $POP3_PORT but not on $IMAP_LD_HOST:$IMAP_LD_PORT"; }

# --- self-check: failed login must not delay the next one -----------------------
# Logs in over plain POP3 and prints the reply to PASS.
pop3_login() { # user pass
  (
    exec 3<>"/dev/tcp/$HOST/$POP3_PORT" || exit 1
    IFS= read -r -t 10 l <&3 || exit 1
    printf 'USER %s\r\n' "$1" >&3; IFS= read -r -t 10 l <&3 || exit 1
    printf 'PASS %s\r\n' "$2" >&3; IFS= read -r -t 10 l <&3 || exit 1
    printf '%s' "${l%$'\r'}"
    printf 'QUIT\r\n' >&3; IFS= read -r -t 10 _ <&3 || true
  ) 2>/dev/null
}
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# Note: the -ERR for a wrong password itself still takes up to ~0.5 s: Dovecot
# 2.3 flushes delayed auth failures on a fixed 500 ms timer even with
# auth_failure_delay = 0 (only the "nodelay" passdb field skips it, and a
# failed passdb lookup drops its extra fields).
tb=$(now_ms)
bad=$(pop3_login selfcheck wrong-password || true)
tb=$(( $(now_ms) - tb ))
case $bad in
  "-ERR"*) ;;
  *) show_logs; die "self-check: wrong password was not rejected (got '$bad')" ;;
esac
t0=$(now_ms)
good=$(pop3_login selfcheck "${PASSWORDS[selfcheck]}" || true)
t1=$(now_ms)
case $good in
  "+OK"*) ;;
  *) show_logs; die "self-check: user selfcheck could not log in (got '$good')" ;;
esac
if [ $((t1 - t0)) -ge 2000 ]; then
  show_logs
  die "self-check: login after a failed one took $((t1 - t0)) ms (auth penalty still active?)"
fi
log "self-check ok: wrong password rejected in $tb ms, correct login right after it took $((t1 - t0)) ms"

# --- env file ---------------------------------------------------------------------
cat > "$DIR/env" <<EOF
MAILCHECK_DOVECOT_DIR=$DIR
MAILCHECK_DOVECOT_VERSION=$DOVECOT_VERSION
MAILCHECK_DOVECOT_HOST=$HOST
MAILCHECK_DOVECOT_POP3=$HOST:$POP3_PORT
MAILCHECK_DOVECOT_POP3S=$HOST:$POP3S_PORT
MAILCHECK_DOVECOT_IMAP=$HOST:$IMAP_PORT
MAILCHECK_DOVECOT_IMAPS=$HOST:$IMAPS_PORT
MAILCHECK_DOVECOT_POP3_PORT=$POP3_PORT
MAILCHECK_DOVECOT_POP3S_PORT=$POP3S_PORT
MAILCHECK_DOVECOT_IMAP_PORT=$IMAP_PORT
MAILCHECK_DOVECOT_IMAPS_PORT=$IMAPS_PORT
MAILCHECK_DOVECOT_IMAP_LOGINDISABLED=$IMAP_LD_HOST:$IMAP_LD_PORT
MAILCHECK_DOVECOT_CACERT=$DIR/cert.pem
MAILCHECK_DOVECOT_TLS_NAME=localhost
MAILCHECK_DOVECOT_USER=alice
MAILCHECK_DOVECOT_PASSWORD=${PASSWORDS[alice]}
MAILCHECK_DOVECOT_USER2=bob
MAILCHECK_DOVECOT_PASSWORD2=${PASSWORDS[bob]}
MAILCHECK_DOVECOT_USER3=carol
MAILCHECK_DOVECOT_PASSWORD3=${PASSWORDS[carol]}
MAILCHECK_DOVECOT_MESSAGES=$DIR/messages.tsv
MAILCHECK_DOVECOT_PID=$PID
EOF

log "dovecot $DOVECOT_VERSION running (pid $PID): pop3 $HOST:$POP3_PORT pop3s $HOST:$POP3S_PORT imap $HOST:$IMAP_PORT imaps $HOST:$IMAPS_PORT imap-logindisabled $IMAP_LD_HOST:$IMAP_LD_PORT"
log "env: $DIR/env"
