//! IMAP response reader throughput: a generated UID FETCH answer of 2,000
//! messages of about 50 KB each, `* n FETCH (UID n RFC822.SIZE s BODY[] {s}`,
//! then s octets and `)`, over 100 MB in all, fed in 64 KiB chunks through
//! the framer, the grammar and the session model, in process. Prints medians
//! of several runs: MB/s of literal data, responses/s, and the time relative
//! to a baseline that only scans for line ends (as benches/pop3_reader.rs does).
//!
//! Run: `cargo bench --bench imap_reader` (MAILCHECK_BENCH_MESSAGES, default
//! 2000, to change the size).

use mailcheck::proto::imap::{Command, Limits, ReadEvent, Reader};
use std::time::Instant;

const CHUNK: usize = 64 * 1024;

/// Greeting, LOGIN, SELECT and the FETCH answer, and the commands to register.
fn stream(messages: u32) -> (Vec<u8>, u64) {
    // Text to cut message bodies from: header lines, then body lines.
    let mut text = Vec::with_capacity(64 * 1024);
    text.extend_from_slice(b"From: Bench Sender <bench@mailcheck.test>\r\nTo: alice@mailcheck.test\r\n");
    text.extend_from_slice(b"Subject: imap reader benchmark\r\nMIME-Version: 1.0\r\n\r\n");
    let mut i = 0u64;
    while text.len() < 60 * 1024 {
        text.extend_from_slice(
            format!("line {i:08}: the quick brown fox jumps over the lazy dog 0123456789\r\n").as_bytes(),
        );
        i += 1;
    }
    let sizes: Vec<usize> = (0..messages)
        .map(|n| 50_000 + (n as usize * 7919) % 4000)
        .collect();
    let total: usize = sizes.iter().sum();
    let mut out = Vec::with_capacity(total + messages as usize * 64 + 1024);
    out.extend_from_slice(b"* OK [CAPABILITY IMAP4rev1 LITERAL+] bench ready\r\n");
    out.extend_from_slice(b"a1 OK logged in\r\n");
    out.extend_from_slice(b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n");
    out.extend_from_slice(
        b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] ok\r\n",
    );
    out.extend_from_slice(format!("* {messages} EXISTS\r\n* 0 RECENT\r\n").as_bytes());
    out.extend_from_slice(b"* OK [UIDVALIDITY 1700000000] ok\r\n");
    out.extend_from_slice(format!("* OK [UIDNEXT {}] ok\r\n", messages + 1).as_bytes());
    out.extend_from_slice(b"a2 OK [READ-WRITE] selected\r\n");
    for (n, &s) in sizes.iter().enumerate() {
        let seq = n + 1;
        out.extend_from_slice(
            format!("* {seq} FETCH (UID {seq} RFC822.SIZE {s} BODY[] {{{s}}}\r\n").as_bytes(),
        );
        out.extend_from_slice(&text[..s]);
        out.extend_from_slice(b")\r\n");
    }
    out.extend_from_slice(b"a3 OK fetch completed\r\n");
    (out, total as u64)
}

fn commands() -> Vec<Command> {
    [
        "a1 LOGIN alice secret",
        "a2 SELECT INBOX",
        "a3 UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[])",
    ]
    .iter()
    .map(|c| Command::parse(c.as_bytes()).expect("command"))
    .collect()
}

/// The baseline: find every line end, nothing else.
fn split_only(data: &[u8]) -> u64 {
    let mut n = 0u64;
    for chunk in data.chunks(CHUNK) {
        let mut rest = chunk;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            n += 1;
            rest = &rest[i + 1..];
        }
    }
    n
}

/// Framer + grammar + session over the whole stream; returns (responses, literal octets).
fn read(data: &[u8], cmds: &[Command], limits: Limits) -> (u64, u64) {
    let mut reader = Reader::new(limits, false);
    let mut findings = Vec::new();
    for c in cmds {
        reader.command(c, &mut findings);
    }
    let mut responses = 0u64;
    let mut streamed = 0u64;
    for chunk in data.chunks(CHUNK) {
        let mut rest = chunk;
        loop {
            let (used, ev) = reader.feed(rest, &mut findings);
            rest = &rest[used..];
            match ev {
                None => break,
                Some(ReadEvent::Response { .. }) => responses += 1,
                Some(ReadEvent::LiteralData(d)) => streamed += d.len() as u64,
                Some(_) => {}
            }
        }
    }
    reader.closed(&mut findings);
    let notes_only = findings.iter().all(|f| f.rule == "imap.close-without-bye");
    assert!(notes_only, "unexpected findings: {findings:#?}");
    assert_eq!(
        reader.session.exists(),
        reader.session.uid_of(reader.session.exists().unwrap_or(0))
    );
    if limits.max_inline_literal < 50_000 {
        assert_eq!(streamed, reader.literal_octets());
    }
    (responses, reader.literal_octets())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let messages: u32 = std::env::var("MAILCHECK_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let (data, literal_total) = stream(messages);
    let cmds = commands();
    let streaming = Limits {
        max_inline_literal: 4096,
        ..Limits::default()
    };
    let keeping = Limits::default();
    let runs = 7;
    let (mut base, mut streamed, mut kept) = (Vec::new(), Vec::new(), Vec::new());
    let mut responses = 0;
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(split_only(std::hint::black_box(&data)));
        base.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let (r, lit) = read(std::hint::black_box(&data), &cmds, streaming);
        streamed.push(t.elapsed().as_secs_f64());
        assert_eq!(lit, literal_total);
        responses = r;
        let t = Instant::now();
        let (_, lit) = read(std::hint::black_box(&data), &cmds, keeping);
        kept.push(t.elapsed().as_secs_f64());
        assert_eq!(lit, literal_total);
    }
    let (b, s, k) = (median(base), median(streamed), median(kept));
    let mb = literal_total as f64 / 1e6;
    let wire = data.len() as f64 / 1e6;
    println!(
        "imap reader: {messages} FETCH responses, {mb:.0} MB of literal data ({wire:.0} MB on the wire), \
         64 KiB chunks, medians of {runs}"
    );
    println!("  baseline line-end scan (memchr only):  {:>7.0} MB/s", wire / b);
    for (label, t) in [
        ("literals streamed (inline <= 4 KiB):", s),
        ("literals kept (inline <= 64 KiB):  ", k),
    ] {
        println!(
            "  {label} {:>7.0} MB/s of literal data, {:>9.0} responses/s ({:.2}x baseline time)",
            mb / t,
            responses as f64 / t,
            t / b
        );
    }
}
