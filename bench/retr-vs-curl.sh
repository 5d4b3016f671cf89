#!/usr/bin/env bash
# RETR of a large message from a real Dovecot over loopback: mailcheck
# (streaming through the POP3 validator) against curl fetching the same
# message in the same run. Prints median wall time and peak RSS of each.
#
# usage: bash bench/retr-vs-curl.sh [SIZE_MB (default 200)] [RUNS (default 5)]
# Needs root (starts Dovecot via ci/dovecot/start.sh on ports 1111x).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SIZE_MB=${1:-200}
RUNS=${2:-5}

export MAILCHECK_DOVECOT_POP3_PORT=11110 MAILCHECK_DOVECOT_POP3S_PORT=11995
export MAILCHECK_DOVECOT_IMAP_PORT=11143 MAILCHECK_DOVECOT_IMAPS_PORT=11993
DIR=$(mktemp -d /tmp/mailcheck-bench.XXXXXX)
trap 'bash ci/dovecot/stop.sh "$DIR" >/dev/null 2>&1 || true; rm -rf "$DIR"' EXIT
bash ci/dovecot/start.sh "$DIR" >/dev/null 2>&1
set -a; . "$DIR/env"; set +a

# A large message appended to alice's maildir (LF endings; Dovecot sends CRLF).
MAILDIR="$DIR/mail/alice/Maildir"
MSG="$MAILDIR/new/1800000000.big.mailcheck"
python3 - "$MSG" "$SIZE_MB" <<'PY'
import sys
path, mb = sys.argv[1], int(sys.argv[2])
line = b"0123456789 the quick brown fox jumps over the lazy dog 0123456789 abcdefgh\n"
with open(path, "wb") as f:
    f.write(b"From: bench@mailcheck.test\nTo: alice@mailcheck.test\nSubject: big\n"
            b"Message-ID: <big@mailcheck.test>\nDate: Tue, 14 Nov 2023 22:13:20 +0000\n\n")
    n = mb * 1024 * 1024 // len(line)
    for i in range(n):
        f.write(b".dot-leading line\n" if i % 1000 == 0 else line)
PY
chown --reference="$MAILDIR" "$MSG"

cargo build --release --quiet
BIN=target/release/mailcheck
# The message number of the big one is the last.
COUNT=$(printf 'USER alice\r\nPASS %s\r\nSTAT\r\nQUIT\r\n' "$MAILCHECK_DOVECOT_PASSWORD" \
    | timeout 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$MAILCHECK_DOVECOT_POP3_PORT; cat >&3; cat <&3" | awk '/^\+OK [0-9]+ [0-9]+/{print $2}' | tr -d '\r')

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > "$DIR/mc.txt"; : > "$DIR/curl.txt"
for _ in $(seq "$RUNS"); do
    MAILCHECK_PASSWORD=$MAILCHECK_DOVECOT_PASSWORD /usr/bin/time -f "%e %M" -a -o "$DIR/mc.txt" \
        "$BIN" run bench/retr-large.yaml --target "pop3://$MAILCHECK_DOVECOT_POP3" --user alice -q --timeout 60 >/dev/null
    /usr/bin/time -f "%e %M" -a -o "$DIR/curl.txt" \
        curl -s -o /dev/null "pop3://$MAILCHECK_DOVECOT_POP3/$COUNT" -u "alice:$MAILCHECK_DOVECOT_PASSWORD"
done
mc_t=$(awk '{print $1}' "$DIR/mc.txt" | median); mc_m=$(awk '{print $2}' "$DIR/mc.txt" | median)
cu_t=$(awk '{print $1}' "$DIR/curl.txt" | median); cu_m=$(awk '{print $2}' "$DIR/curl.txt" | median)
echo "RETR of a ${SIZE_MB} MB message (message $COUNT) from Dovecot over loopback, median of $RUNS runs"
awk -v mt="$mc_t" -v mm="$mc_m" -v ct="$cu_t" -v cm="$cu_m" 'BEGIN {
    printf "  mailcheck: %6.2f s  peak RSS %6.1f MB\n", mt, mm / 1024
    printf "  curl:      %6.2f s  peak RSS %6.1f MB\n", ct, cm / 1024
    printf "  mailcheck/curl wall time: %.2fx\n", (ct > 0 ? mt / ct : 0)
}'
