#!/usr/bin/env bash
# Start a throw-away Postfix (SMTP relay port, submission, smtps) on 127.0.0.1
# for mailcheck's integration tests. It authenticates against and delivers into
# a Dovecot started by ci/dovecot/start.sh.
#
# usage: ci/postfix/start.sh DIR [DOVECOT_DIR]
#
# DOVECOT_DIR (default: $MAILCHECK_DOVECOT_DIR) is the DIR of a running
# ci/dovecot/start.sh instance: its users are the SMTP users (AUTH goes to its
# auth socket) and mail for USER@mailcheck.test lands in its maildirs.
#
# DIR is wiped and recreated (it must be empty, missing, or a DIR made by an
# earlier run of this script). Everything of Postfix lives inside DIR: config
# (DIR/etc), queue (DIR/spool), data (DIR/data), TLS cert/key, logs. A previous
# instance recorded in DIR is stopped first, so running this twice is fine.
#
# Installs postfix and swaks with apt-get (as root) when missing, without
# configuring or starting the system-wide Postfix.
#
# On success DIR/env holds KEY=VALUE lines (no quoting; DIR may only contain
# [A-Za-z0-9_./-]) that scripts can `set -a; . DIR/env; set +a`.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

SMTP_PORT=${MAILCHECK_POSTFIX_SMTP_PORT:-10025}
SUBMISSION_PORT=${MAILCHECK_POSTFIX_SUBMISSION_PORT:-10587}
SMTPS_PORT=${MAILCHECK_POSTFIX_SMTPS_PORT:-10465}
# Bytes; 0 = unlimited. The benchmark raises it.
SIZE_LIMIT=${MAILCHECK_POSTFIX_SIZE_LIMIT:-10485760}
# Postfix default_process_limit: max concurrent smtpd processes per listener.
PROCESS_LIMIT=${MAILCHECK_POSTFIX_PROCESS_LIMIT:-100}
HOST=127.0.0.1
DOMAIN=mailcheck.test   # the domain of ci/dovecot's seeded messages
TLS_NAME=localhost
MARKER=.mailcheck-postfix
# Name of the Dovecot auth client listener (relative to Dovecot's base_dir,
# DOVECOT_DIR/run) that ci/dovecot/start.sh provides for Postfix.
DOVECOT_AUTH_LISTENER=auth-postfix

log() { printf 'postfix/start.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { printf 'usage: %s DIR [DOVECOT_DIR]   (or MAILCHECK_DOVECOT_DIR=DOVECOT_DIR)\n' "$0" >&2; exit 2; }

if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
[ -n "$1" ] || usage

abspath() {
  local d
  case $1 in
    /*) d=$1 ;;
    *) d=$PWD/$1 ;;
  esac
  while [ "${#d}" -gt 1 ] && [ "${d%/}" != "$d" ]; do d=${d%/}; done
  printf '%s' "$d"
}

# --- resolve and sanity-check DIR -------------------------------------------
DIR=$(abspath "$1")
[[ $DIR =~ ^[A-Za-z0-9_./-]+$ ]] \
  || die "DIR '$DIR' may only contain A-Z a-z 0-9 _ . / - (it is written unquoted to DIR/env and main.cf)"
case /$DIR/ in
  */../*|*/./*) die "DIR '$DIR' must not contain . or .. components" ;;
esac
case $DIR in
  /|/bin|/boot|/dev|/etc|/home|/lib|/lib64|/opt|/proc|/root|/run|/sbin|/srv|/sys|/tmp|/usr|/var|/work)
    die "refusing to use '$DIR' as DIR" ;;
esac
# Postfix's unix sockets live in DIR/spool/{private,public}/; sun_path is 108 bytes.
[ "${#DIR}" -le 70 ] || die "DIR '$DIR' is too long (max 70 chars, unix socket paths inside it must stay < 108)"

# --- the Dovecot instance ----------------------------------------------------
DOVECOT_ARG=${2:-${MAILCHECK_DOVECOT_DIR:-}}
[ -n "$DOVECOT_ARG" ] \
  || die "no Dovecot DIR: pass it as the second argument or set MAILCHECK_DOVECOT_DIR (start ci/dovecot/start.sh first)"
DOVECOT_DIR=$(abspath "$DOVECOT_ARG")
[[ $DOVECOT_DIR =~ ^[A-Za-z0-9_./-]+$ ]] || die "DOVECOT_DIR '$DOVECOT_DIR' may only contain A-Z a-z 0-9 _ . / -"
[ "$DOVECOT_DIR" != "$DIR" ] || die "DIR and DOVECOT_DIR must differ"
if [ ! -e "$DOVECOT_DIR/.mailcheck-dovecot" ] || [ ! -s "$DOVECOT_DIR/env" ] || [ ! -r "$DOVECOT_DIR/users" ]; then
  die "'$DOVECOT_DIR' is not a running ci/dovecot/start.sh DIR (needs .mailcheck-dovecot, env, users)"
fi
case /$DIR/ in
  "/$DOVECOT_DIR/"*) die "DIR must not be inside DOVECOT_DIR (ci/dovecot/start.sh wipes it)" ;;
esac
case /$DOVECOT_DIR/ in
  "/$DIR/"*) die "DOVECOT_DIR must not be inside DIR (this script wipes DIR)" ;;
esac
# Value of KEY in DOVECOT_DIR/env (read, not sourced).
dovecot_env() { sed -n "s/^$1=//p" "$DOVECOT_DIR/env" | tail -n 1; }
DOVECOT_PID=$(dovecot_env MAILCHECK_DOVECOT_PID)
if [ -z "$DOVECOT_PID" ] || ! kill -0 "$DOVECOT_PID" 2>/dev/null; then
  die "the Dovecot of '$DOVECOT_DIR' is not running (pid '${DOVECOT_PID}'); run ci/dovecot/start.sh $DOVECOT_DIR first"
fi

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages, runs the postfix master which drops privileges)"

for v in SMTP_PORT SUBMISSION_PORT SMTPS_PORT SIZE_LIMIT PROCESS_LIMIT; do
  [[ ${!v} =~ ^[0-9]+$ ]] || die "$v='${!v}' is not a number"
done
[ "$PROCESS_LIMIT" -ge 1 ] || die "MAILCHECK_POSTFIX_PROCESS_LIMIT must be >= 1"

# --- install postfix and swaks if needed ---------------------------------------
find_postconf() {
  local b
  b=$(command -v postconf 2>/dev/null || true)
  if [ -z "$b" ] && [ -x /usr/sbin/postconf ]; then b=/usr/sbin/postconf; fi
  printf '%s' "$b"
}
system_postfix_pid() {
  local p
  [ -s /var/spool/postfix/pid/master.pid ] || return 1
  p=$(tr -dc '0-9' < /var/spool/postfix/pid/master.pid)
  [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 1
  printf '%s' "$p"
}

POSTCONF=$(find_postconf)
pkgs=()
[ -n "$POSTCONF" ] || pkgs+=(postfix)
command -v swaks >/dev/null 2>&1 || pkgs+=(swaks)
# swaks needs Net::SSLeay for STARTTLS/TLS (only "recommended" by the package).
perl -MNet::SSLeay -e 1 >/dev/null 2>&1 || pkgs+=(libnet-ssleay-perl)
command -v openssl >/dev/null 2>&1 || pkgs+=(openssl)
if [ "${#pkgs[@]}" -gt 0 ]; then
  log "installing ${pkgs[*]}"
  syspid_before=$(system_postfix_pid || true)
  # "No configuration": the package writes no /etc/postfix/main.cf and does
  # not start the system-wide Postfix (port 25).
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  # Also keep maintainer scripts from starting services: policy-rc.d exit 101
  # = "action forbidden".
  policy_created=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    policy_created=1
  fi
  apt_log=$(mktemp /tmp/mailcheck-postfix-apt.XXXXXX)
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
  POSTCONF=$(find_postconf)
  [ -n "$POSTCONF" ] || die "postconf still not found after installing ${pkgs[*]}"
  command -v swaks >/dev/null 2>&1 || die "swaks still not found after installing ${pkgs[*]}"
  perl -MNet::SSLeay -e 1 >/dev/null 2>&1 || die "perl Net::SSLeay still missing after installing ${pkgs[*]}"
  # If the install started the system instance anyway, stop it: we only want ours.
  syspid=$(system_postfix_pid || true)
  if [ -n "$syspid" ] && [ "$syspid" != "$syspid_before" ]; then
    log "stopping the system postfix (pid $syspid) started by the package install"
    postfix stop >/dev/null 2>&1 || kill "$syspid" 2>/dev/null || true
  fi
fi
command -v openssl >/dev/null 2>&1 || die "openssl not found"
command -v swaks >/dev/null 2>&1 || die "swaks not found"
DAEMON_DIR=$("$POSTCONF" -dh daemon_directory)
MASTER=$DAEMON_DIR/master
[ -x "$MASTER" ] || die "postfix master not found at $MASTER"
POSTFIX=$(dirname "$POSTCONF")/postfix
[ -x "$POSTFIX" ] || POSTFIX=$(command -v postfix 2>/dev/null || true)
[ -n "$POSTFIX" ] || die "postfix command not found"
POSTFIX_VERSION=$("$POSTCONF" -dh mail_version)
id -u postfix >/dev/null 2>&1 || die "user 'postfix' missing (the postfix package creates it)"
getent group postdrop >/dev/null 2>&1 || die "group 'postdrop' missing (the postfix package creates it)"
log "using $MASTER (postfix $POSTFIX_VERSION)"

# --- read the Dovecot users and the mail owner --------------------------------
# DOVECOT_DIR/users: name:{PLAIN}password:uid:gid:gecos:home:shell
MAIL_BASE=$DOVECOT_DIR/mail
MAIL_UID=
MAIL_GID=
MAILBOX_LINES=()
MAILBOX_USERS=()
while IFS=: read -r name _ uid gid _ home _; do
  [ -n "$name" ] || continue
  case $home in
    "$MAIL_BASE/"*) ;;
    *) log "skipping Dovecot user '$name': home '$home' is not under $MAIL_BASE"; continue ;;
  esac
  [ -d "$home/Maildir" ] || { log "skipping Dovecot user '$name': no $home/Maildir"; continue; }
  if [ -z "$MAIL_UID" ]; then
    MAIL_UID=$uid; MAIL_GID=$gid
  elif [ "$MAIL_UID:$MAIL_GID" != "$uid:$gid" ]; then
    die "Dovecot users have different uids/gids ($MAIL_UID:$MAIL_GID vs $uid:$gid for $name); only one virtual uid is supported"
  fi
  # Relative to virtual_mailbox_base; trailing slash = maildir format.
  MAILBOX_LINES+=("$name@$DOMAIN ${home#"$MAIL_BASE/"}/Maildir/")
  MAILBOX_USERS+=("$name")
done < "$DOVECOT_DIR/users"
[ "${#MAILBOX_USERS[@]}" -gt 0 ] || die "no usable users in $DOVECOT_DIR/users"
[[ $MAIL_UID =~ ^[0-9]+$ && $MAIL_GID =~ ^[0-9]+$ ]] || die "bad uid/gid '$MAIL_UID:$MAIL_GID' in $DOVECOT_DIR/users"
[ "$MAIL_UID" -ne 0 ] || die "Dovecot mail uid is 0; postfix virtual(8) refuses to deliver as root"

# --- the Dovecot auth socket -----------------------------------------------------
# Preferred: a listener made for Postfix in ci/dovecot/start.sh's dovecot.conf
#   service auth { unix_listener auth-postfix { mode = 0666 } }
# (smtpd runs as user postfix, Dovecot's default auth-client socket is 0600
# dovecot). MAILCHECK_POSTFIX_AUTH_SOCKET overrides the path.
is_socket_wait() { # path seconds
  local _
  for _ in $(seq 1 $(($2 * 10))); do
    [ -S "$1" ] && return 0
    sleep 0.1
  done
  [ -S "$1" ]
}
AUTH_SOCKET_MODE=listener
if [ -n "${MAILCHECK_POSTFIX_AUTH_SOCKET:-}" ]; then
  AUTH_SOCKET=$(abspath "$MAILCHECK_POSTFIX_AUTH_SOCKET")
  [ -S "$AUTH_SOCKET" ] || die "MAILCHECK_POSTFIX_AUTH_SOCKET '$AUTH_SOCKET' is not a socket"
elif [ -S "$DOVECOT_DIR/run/$DOVECOT_AUTH_LISTENER" ]; then
  AUTH_SOCKET=$DOVECOT_DIR/run/$DOVECOT_AUTH_LISTENER
elif is_socket_wait "$DOVECOT_DIR/run/auth-client" 2; then
  # Fallback for a ci/dovecot/start.sh without the auth-postfix listener: open
  # up Dovecot's default client socket (it is recreated 0600 when Dovecot
  # restarts, then run this script again).
  AUTH_SOCKET=$DOVECOT_DIR/run/auth-client
  AUTH_SOCKET_MODE=auth-client-chmod
  log "warning: $DOVECOT_DIR/run/$DOVECOT_AUTH_LISTENER missing (ci/dovecot/start.sh lacks"
  log "warning:   'service auth { unix_listener $DOVECOT_AUTH_LISTENER { mode = 0666 } }'); making"
  log "warning:   $AUTH_SOCKET mode 0666 instead so that smtpd (user postfix) can use it"
  chmod 0666 "$AUTH_SOCKET"
else
  die "no Dovecot auth socket: neither $DOVECOT_DIR/run/$DOVECOT_AUTH_LISTENER nor $DOVECOT_DIR/run/auth-client exists"
fi
# smtpd (user postfix) must reach the socket: every directory above it must be
# searchable by others.
d=$(dirname "$AUTH_SOCKET")
while [ "$d" != / ]; do
  [ "$(( 0$(stat -c %a "$d") & 1 ))" -eq 1 ] || die "directory $d is not searchable by user postfix (needed for $AUTH_SOCKET)"
  d=$(dirname "$d")
done

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
for p in "$SMTP_PORT" "$SUBMISSION_PORT" "$SMTPS_PORT"; do
  if port_open "$p"; then
    die "$HOST:$p is already in use (another instance? run ci/postfix/stop.sh on its DIR)"
  fi
done

mkdir -p "$DIR"
chmod 0755 "$DIR"   # postfix daemons run as user postfix and must traverse DIR
: > "$DIR/$MARKER"
mkdir -p "$DIR/etc" "$DIR/spool" "$DIR/data"
chmod 0755 "$DIR/etc" "$DIR/spool"
chown postfix: "$DIR/data"
chmod 0700 "$DIR/data"

# --- TLS: one self-signed cert, usable directly as the CA (--cacert) --------
# CA:FALSE and no keyUsage so that both OpenSSL (curl, swaks) and
# rustls/webpki (which rejects a CA:TRUE end-entity cert) accept it as its own
# trust anchor. Same recipe as ci/dovecot/start.sh.
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
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
EOF
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
  -config "$DIR/openssl.cnf" -keyout "$DIR/key.pem" -out "$DIR/cert.pem" >/dev/null 2>&1 \
  || die "openssl could not create the certificate"
chmod 0600 "$DIR/key.pem"   # smtpd reads it while still root
chmod 0644 "$DIR/cert.pem"

# --- lookup tables (texthash: plain text, no postmap needed) -----------------
{
  printf '# USER@%s  maildir relative to virtual_mailbox_base (%s)\n' "$DOMAIN" "$MAIL_BASE"
  printf '%s\n' "${MAILBOX_LINES[@]}"
} > "$DIR/etc/vmailbox"
chmod 0644 "$DIR/etc/vmailbox"

# --- main.cf -------------------------------------------------------------------
# virtual(8) refuses uids below virtual_minimum_uid (default 100).
MIN_UID=100
[ "$MAIL_UID" -ge "$MIN_UID" ] || MIN_UID=$MAIL_UID

cat > "$DIR/etc/main.cf" <<EOF
# Generated by ci/postfix/start.sh for mailcheck integration tests.
# Standalone: nothing from /etc/postfix is used (except the package's
# postfix-files and dynamicmaps.cf in meta_directory).
compatibility_level = 3.6
queue_directory = $DIR/spool
data_directory = $DIR/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $DIR/postfix.log
maillog_file_prefixes = $DIR
readme_directory = no
biff = no

myhostname = localhost
mydomain = $DOMAIN
myorigin = \$mydomain
smtpd_banner = \$myhostname ESMTP Postfix (mailcheck test)
append_dot_mydomain = no
inet_interfaces = $HOST
inet_protocols = ipv4
# No "trusted" networks: loopback clients get no relaying without AUTH.
mynetworks =
# ... but are exempt from the per-client connection count/rate limits.
smtpd_client_event_limit_exceptions = 127.0.0.0/8
smtpd_peername_lookup = no

# Nothing is delivered locally or to other hosts: only $DOMAIN (virtual).
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
local_transport = error:5.1.1 local delivery is disabled on this test server
# Mail that authenticated users relay to other domains is accepted and dropped.
default_transport = discard:relaying to other domains is discarded on this test server
relay_transport = \$default_transport
relay_domains =

# Delivery into ci/dovecot's maildirs, as Dovecot's mail user.
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_base = $MAIL_BASE
virtual_mailbox_maps = texthash:$DIR/etc/vmailbox
virtual_alias_maps =
virtual_uid_maps = static:$MAIL_UID
virtual_gid_maps = static:$MAIL_GID
virtual_minimum_uid = $MIN_UID
virtual_mailbox_limit = 0
mailbox_size_limit = 0
recipient_delimiter = +

message_size_limit = $SIZE_LIMIT
disable_vrfy_command = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
smtpd_recipient_restrictions = reject_unlisted_recipient
smtpd_reject_unlisted_recipient = yes
unknown_virtual_mailbox_reject_code = 550
# Hardening the bundled suite expects: a session starts with EHLO/HELO, and
# a bare LF never ends message data (without it, Postfix 3.7 takes
# LF.CRLF as the end: SMTP smuggling, CVE-2023-51764, which mailcheck's
# data-lf-dot-is-not-the-end scenario reports).
smtpd_helo_required = yes
smtpd_forbid_bare_newline = yes
smtpd_forbid_bare_newline_exclusions =

# Tuned for tests and benchmarks: no penalties, no throttling.
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 1000
in_flow_delay = 0
default_process_limit = $PROCESS_LIMIT

# SASL: Dovecot's auth server. AUTH only on the submission/smtps ports (master.cf).
smtpd_sasl_auth_enable = no
smtpd_sasl_type = dovecot
smtpd_sasl_path = $AUTH_SOCKET
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous
smtpd_tls_auth_only = yes
broken_sasl_auth_clients = no

# TLS
smtpd_tls_chain_files = $DIR/key.pem, $DIR/cert.pem
smtpd_tls_security_level = may
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtp_tls_security_level = none
EOF

# --- master.cf -----------------------------------------------------------------
# Nothing chrooted (column 5 = n). Listeners on $HOST only.
cat > "$DIR/etc/master.cf" <<EOF
# Generated by ci/postfix/start.sh.
# service type  private unpriv  chroot  wakeup  maxproc command + args
$HOST:$SMTP_PORT inet n - n - - smtpd
  -o syslog_name=postfix/smtp
$HOST:$SUBMISSION_PORT inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
$HOST:$SMTPS_PORT inet n - n - - smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
pickup     unix  n       -       n       60      1       pickup
cleanup    unix  n       -       n       -       0       cleanup
qmgr       unix  n       -       n       300     1       qmgr
tlsmgr     unix  -       -       n       1000?   1       tlsmgr
rewrite    unix  -       -       n       -       -       trivial-rewrite
bounce     unix  -       -       n       -       0       bounce
defer      unix  -       -       n       -       0       bounce
trace      unix  -       -       n       -       0       bounce
verify     unix  -       -       n       -       1       verify
flush      unix  n       -       n       1000?   0       flush
proxymap   unix  -       -       n       -       -       proxymap
proxywrite unix  -       -       n       -       1       proxymap
smtp       unix  -       -       n       -       -       smtp
relay      unix  -       -       n       -       -       smtp
showq      unix  n       -       n       -       -       showq
error      unix  -       -       n       -       -       error
retry      unix  -       -       n       -       -       error
discard    unix  -       -       n       -       -       discard
local      unix  -       n       n       -       -       local
virtual    unix  -       n       n       -       -       virtual
anvil      unix  -       -       n       -       1       anvil
scache     unix  -       -       n       -       1       scache
postlog    unix-dgram n  -       n       -       1       postlogd
EOF
chmod 0644 "$DIR/etc/main.cf" "$DIR/etc/master.cf"
# Postfix waits (about 2 s) before it reads a config or texthash file modified
# within the current second; backdate them so that startup does not pause.
touch -d '-10 seconds' "$DIR/etc/main.cf" "$DIR/etc/master.cf" "$DIR/etc/vmailbox"

# Config syntax/unused-parameter warnings, then create the queue directories.
"$POSTCONF" -c "$DIR/etc" -n > "$DIR/postconf-n.txt" 2> "$DIR/postconf.err" \
  || { cat "$DIR/postconf.err" >&2; die "main.cf does not parse"; }
if [ -s "$DIR/postconf.err" ]; then
  log "postconf warnings:"; cat "$DIR/postconf.err" >&2
fi
"$POSTFIX" -c "$DIR/etc" check > "$DIR/check.out" 2>&1 \
  || { cat "$DIR/check.out" >&2; die "postfix -c $DIR/etc check failed"; }
[ -d "$DIR/spool/maildrop" ] || { cat "$DIR/check.out" >&2; die "postfix check did not create the queue directories"; }

# --- start ---------------------------------------------------------------------
# master -d stays in the foreground (postfix start-fg wants to be PID 1). No job
# control in a script: the background child is not a group leader, so setsid
# does not fork and $! is the master's own PID (and its process group id).
setsid nohup "$MASTER" -d -c "$DIR/etc" > "$DIR/postfix.out" 2>&1 < /dev/null &
PID=$!
printf '%s\n' "$PID" > "$DIR/postfix.pid"

show_logs() {
  log "--- tail $DIR/postfix.out ---"
  tail -n 30 "$DIR/postfix.out" >&2 2>/dev/null || true
  log "--- tail $DIR/postfix.log ---"
  tail -n 30 "$DIR/postfix.log" >&2 2>/dev/null || true
}
fail() { show_logs; "$SCRIPT_DIR/stop.sh" "$DIR" >/dev/null 2>&1 || true; die "$*"; }

# First line the server sends on HOST:PORT (CR stripped); plain TCP.
greeting() {
  (
    exec 3<>"/dev/tcp/$HOST/$1" || exit 1
    IFS= read -r -t 3 line <&3 || exit 1
    printf '%s' "${line%$'\r'}"
    printf 'QUIT\r\n' >&3
  ) 2>/dev/null
}
# Same over implicit TLS, verifying the certificate and its name.
tls_greeting() {
  printf 'QUIT\r\n' | timeout 5 openssl s_client -connect "$HOST:$1" -quiet \
    -CAfile "$DIR/cert.pem" -verify_return_error -verify_hostname "$TLS_NAME" 2>/dev/null \
    | head -n 1 | tr -d '\r'
}

deadline=$((SECONDS + 20))
for p in "$SMTP_PORT" "$SUBMISSION_PORT" "$SMTPS_PORT"; do
  while :; do
    if ! kill -0 "$PID" 2>/dev/null; then
      fail "postfix master exited during startup"
    fi
    if [ "$p" = "$SMTPS_PORT" ]; then g=$(tls_greeting "$p" || true); else g=$(greeting "$p" || true); fi
    case $g in
      "220 "*) break ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
      fail "no 220 greeting on $HOST:$p within 20 s (last: '${g:-nothing}')"
    fi
    sleep 0.2
  done
done

# --- self-checks ----------------------------------------------------------------
# 1. AUTH through Dovecot on the submission port (no mail is sent).
AUTH_USER=$(dovecot_env MAILCHECK_DOVECOT_USER)
AUTH_PASS=$(dovecot_env MAILCHECK_DOVECOT_PASSWORD)
if [ -n "$AUTH_USER" ] && [ -n "$AUTH_PASS" ]; then
  out=$(swaks --server "$HOST:$SUBMISSION_PORT" --tls --tls-verify --tls-ca-path "$DIR/cert.pem" \
          --ehlo selfcheck.localhost --auth PLAIN --auth-user "$AUTH_USER" --auth-password "$AUTH_PASS" \
          --quit-after AUTH --timeout 10 2>&1) \
    || { printf '%s\n' "$out" >&2; fail "self-check: AUTH PLAIN as $AUTH_USER on $HOST:$SUBMISSION_PORT failed"; }
  printf '%s\n' "$out" | grep -q '^<~  235 ' \
    || { printf '%s\n' "$out" >&2; fail "self-check: no 235 for AUTH as $AUTH_USER on $HOST:$SUBMISSION_PORT"; }
else
  log "warning: no MAILCHECK_DOVECOT_USER/PASSWORD in $DOVECOT_DIR/env; AUTH self-check skipped"
fi
# 2. Delivery into a Dovecot maildir, with the user that only Dovecot's own
#    self-check uses (alice's and bob's mailboxes stay untouched). The message
#    is removed again.
if printf '%s\n' "${MAILBOX_USERS[@]}" | grep -qx selfcheck; then
  new=$MAIL_BASE/selfcheck/Maildir/new
  tag="mailcheck-postfix-selfcheck-$$-$RANDOM"
  out=$(swaks --server "$HOST:$SMTP_PORT" --ehlo selfcheck.localhost --from "postfix-selfcheck@$DOMAIN" \
          --to "selfcheck@$DOMAIN" --header "Subject: $tag" --body "$tag" --timeout 10 2>&1) \
    || { printf '%s\n' "$out" >&2; fail "self-check: sending to selfcheck@$DOMAIN on $HOST:$SMTP_PORT failed"; }
  found=
  for _ in $(seq 1 100); do
    found=$(grep -l -s -- "$tag" "$new"/* 2>/dev/null | head -n 1 || true)
    [ -n "$found" ] && break
    sleep 0.1
  done
  [ -n "$found" ] || fail "self-check: message to selfcheck@$DOMAIN did not arrive in $new within 10 s"
  owner=$(stat -c %u:%g "$found")
  [ "$owner" = "$MAIL_UID:$MAIL_GID" ] || fail "self-check: delivered file $found is owned by $owner, not $MAIL_UID:$MAIL_GID"
  rm -f -- "$found"
fi
log "self-check ok: AUTH via $AUTH_SOCKET, delivery into $MAIL_BASE as uid $MAIL_UID"

# --- env file ---------------------------------------------------------------------
cat > "$DIR/env" <<EOF
MAILCHECK_POSTFIX_DIR=$DIR
MAILCHECK_POSTFIX_VERSION=$POSTFIX_VERSION
MAILCHECK_POSTFIX_HOST=$HOST
MAILCHECK_POSTFIX_SMTP=$HOST:$SMTP_PORT
MAILCHECK_POSTFIX_SUBMISSION=$HOST:$SUBMISSION_PORT
MAILCHECK_POSTFIX_SMTPS=$HOST:$SMTPS_PORT
MAILCHECK_POSTFIX_SMTP_PORT=$SMTP_PORT
MAILCHECK_POSTFIX_SUBMISSION_PORT=$SUBMISSION_PORT
MAILCHECK_POSTFIX_SMTPS_PORT=$SMTPS_PORT
MAILCHECK_POSTFIX_CACERT=$DIR/cert.pem
MAILCHECK_POSTFIX_TLS_NAME=$TLS_NAME
MAILCHECK_POSTFIX_DOMAIN=$DOMAIN
MAILCHECK_POSTFIX_USER=$AUTH_USER
MAILCHECK_POSTFIX_PASSWORD=$AUTH_PASS
MAILCHECK_POSTFIX_USER2=$(dovecot_env MAILCHECK_DOVECOT_USER2)
MAILCHECK_POSTFIX_PASSWORD2=$(dovecot_env MAILCHECK_DOVECOT_PASSWORD2)
MAILCHECK_POSTFIX_SIZE_LIMIT=$SIZE_LIMIT
MAILCHECK_POSTFIX_DOVECOT_DIR=$DOVECOT_DIR
MAILCHECK_POSTFIX_MAIL_BASE=$MAIL_BASE
MAILCHECK_POSTFIX_AUTH_SOCKET=$AUTH_SOCKET
MAILCHECK_POSTFIX_LOG=$DIR/postfix.log
MAILCHECK_POSTFIX_PID=$PID
EOF

if [ "$AUTH_SOCKET_MODE" != listener ]; then
  log "note: AUTH uses $AUTH_SOCKET made 0666 by this script (see the warning above)"
fi
log "postfix $POSTFIX_VERSION running (pid $PID): smtp $HOST:$SMTP_PORT submission $HOST:$SUBMISSION_PORT smtps $HOST:$SMTPS_PORT, domain $DOMAIN"
log "env: $DIR/env"
