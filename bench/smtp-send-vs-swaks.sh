#!/usr/bin/env bash
# Sending a large message through SMTP DATA (dot-stuffed on the way out):
# mailcheck against swaks sending the same file in the same run, to a real
# Postfix on loopback (which queues and delivers it into Dovecot) and to the
# embedded server. Prints the median wall time, MB/s and peak RSS of each.
#
# usage: bash bench/smtp-send-vs-swaks.sh [SIZE_MB (default 50)] [RUNS (default 5)]
# Needs root (starts Dovecot and Postfix via ci/ on ports 12xxx).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SIZE_MB=${1:-50}
RUNS=${2:-5}

export MAILCHECK_DOVECOT_POP3_PORT=12110 MAILCHECK_DOVECOT_POP3S_PORT=12995
export MAILCHECK_DOVECOT_IMAP_PORT=12143 MAILCHECK_DOVECOT_IMAPS_PORT=12993
export MAILCHECK_POSTFIX_SMTP_PORT=12025 MAILCHECK_POSTFIX_SUBMISSION_PORT=12587 MAILCHECK_POSTFIX_SMTPS_PORT=12465
export MAILCHECK_POSTFIX_SIZE_LIMIT=0   # no limit for the big message
DV=$(mktemp -d /tmp/mailcheck-bench-dv.XXXXXX)
PF=$(mktemp -d /tmp/mailcheck-bench-pf.XXXXXX)
WORK=$(mktemp -d /tmp/mailcheck-bench-smtp.XXXXXX)
SERVE_PID=
cleanup() {
    [ -n "$SERVE_PID" ] && kill "$SERVE_PID" 2>/dev/null || true
    bash ci/postfix/stop.sh "$PF" >/dev/null 2>&1 || true
    bash ci/dovecot/stop.sh "$DV" >/dev/null 2>&1 || true
    rm -rf "$DV" "$PF" "$WORK"
}
trap cleanup EXIT
bash ci/dovecot/start.sh "$DV" >/dev/null 2>&1
bash ci/postfix/start.sh "$PF" "$DV" >/dev/null 2>&1
set -a; . "$PF/env"; . "$DV/env"; set +a
RCPT="carol@$MAILCHECK_POSTFIX_DOMAIN"

# The message: CRLF lines, one in a hundred starting with "." (stuffed on the way out).
python3 - "$WORK/big.eml" "$SIZE_MB" "$RCPT" <<'PY'
import sys
path, mb, rcpt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
line = b"0123456789 the quick brown fox jumps over the lazy dog 0123456789 abcdefgh\r\n"
with open(path, "wb") as f:
    f.write(b"From: bench@mailcheck.test\r\nTo: " + rcpt.encode() + b"\r\nSubject: big\r\n"
            b"Message-ID: <big@mailcheck.test>\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n\r\n")
    for i in range(mb * 1024 * 1024 // len(line)):
        f.write(b".dot-leading line of the benchmark message, stuffed on the way out\r\n" if i % 100 == 0 else line)
PY
mkdir -p "$WORK/smtp"
cat > "$WORK/smtp/send.yaml" <<YAML
name: send one large message
rfc: RFC 5321 section 4.5.2
sends: true
steps:
  - C: EHLO \${client}
    S: "250*"
  - C: MAIL FROM:<bench@mailcheck.test>
    S: "250*"
  - C: RCPT TO:<$RCPT>
    S: "250*"
  - data: {file: ../big.eml}
    S: "250*"
  - C: QUIT
    S: "221*"
YAML

cargo build --release --quiet
BIN=target/release/mailcheck
BYTES=$(stat -c %s "$WORK/big.eml")
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The embedded server, on a free port; restarted before each send, so its
# in-memory mailbox never fills up (it has a quota).
start_embedded() {
    [ -n "$SERVE_PID" ] && { kill "$SERVE_PID" 2>/dev/null || true; wait "$SERVE_PID" 2>/dev/null || true; }
    "$BIN" serve smtp --listen 127.0.0.1:0 --max-message-size $((SIZE_MB * 2 * 1048576)) > "$WORK/serve.out" 2>&1 &
    SERVE_PID=$!
    ADDR=
    for _ in $(seq 50); do
        ADDR=$(grep -oE 'smtp://127\.0\.0\.1:[0-9]+' "$WORK/serve.out" | head -1 | sed 's|smtp://||') || true
        [ -n "$ADDR" ] && return 0
        sleep 0.1
    done
    echo "the embedded server did not start: $(cat "$WORK/serve.out")" >&2
    exit 1
}

# bench NAME: sends to $ADDR (re-read after each `before` hook)
bench() {
    local name=$1 before=$2
    : > "$WORK/mc.txt"; : > "$WORK/swaks.txt"
    for _ in $(seq "$RUNS"); do
        $before
        /usr/bin/time -f "%e %M" -a -o "$WORK/mc.txt" \
            "$BIN" run "$WORK/smtp/send.yaml" --target "smtp://$ADDR" --allow-send -q --timeout 120 >/dev/null
        $before
        /usr/bin/time -f "%e %M" -a -o "$WORK/swaks.txt" \
            swaks --server "$ADDR" --from bench@mailcheck.test --to "$RCPT" --data "@$WORK/big.eml" \
                --suppress-data --silent 2 --timeout 120 >/dev/null
        rm -f "$DV/mail/carol/Maildir/new/"* 2>/dev/null || true
    done
    local mt mm st sm
    mt=$(awk '{print $1}' "$WORK/mc.txt" | median); mm=$(awk '{print $2}' "$WORK/mc.txt" | median)
    st=$(awk '{print $1}' "$WORK/swaks.txt" | median); sm=$(awk '{print $2}' "$WORK/swaks.txt" | median)
    echo "$name: a $((BYTES / 1048576)) MiB message through DATA, median of $RUNS runs"
    awk -v b="$BYTES" -v mt="$mt" -v mm="$mm" -v st="$st" -v sm="$sm" 'BEGIN {
        printf "  mailcheck: %6.2f s  %7.1f MB/s  peak RSS %6.1f MB\n", mt, (mt > 0 ? b / 1e6 / mt : 0), mm / 1024
        printf "  swaks:     %6.2f s  %7.1f MB/s  peak RSS %6.1f MB\n", st, (st > 0 ? b / 1e6 / st : 0), sm / 1024
        printf "  mailcheck/swaks wall time: %.2fx\n", (st > 0 ? mt / st : 0)
    }'
}

ADDR=$MAILCHECK_POSTFIX_SMTP
bench "Postfix $MAILCHECK_POSTFIX_VERSION" :

RCPT=alice@localhost
sed -i "s|RCPT TO:<.*>|RCPT TO:<$RCPT>|" "$WORK/smtp/send.yaml"
bench "embedded server" start_embedded
