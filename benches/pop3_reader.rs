//! Multi-line reader throughput: dot-unstuffing + validation of a generated
//! 100 MB body, in process, and the same through the socket reader over
//! loopback. Prints medians and the ratio to a bare line split (the baseline).
//!
//! Run: `cargo bench --bench pop3_reader` (MAILCHECK_BENCH_MB to change the size).

use mailcheck::proto::pop3::MultilineDecoder;
use mailcheck::wire::{Conn, Target, TlsSettings};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn body(mb: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(mb * 1024 * 1024 + 1024);
    let mut i = 0u64;
    while out.len() < mb * 1024 * 1024 {
        if i % 50 == 0 {
            // A content line starting with '.', stuffed as the server sends it.
            out.extend_from_slice(b"..leading dot line that a server must stuff\r\n");
        } else {
            out.extend_from_slice(
                format!("line {i:08}: the quick brown fox jumps over the lazy dog 0123456789\r\n").as_bytes(),
            );
        }
        i += 1;
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn split_only(data: &[u8]) -> u64 {
    let mut n = 0u64;
    let mut rest = data;
    while let Some(i) = memchr::memchr(b'\n', rest) {
        n += (i + 1) as u64;
        rest = &rest[i + 1..];
    }
    n
}

fn decode(data: &[u8]) -> u64 {
    let mut d = MultilineDecoder::new();
    let mut rest = data;
    while let Some(i) = memchr::memchr(b'\n', rest) {
        let (line, tail) = rest.split_at(i + 1);
        if d.feed(line, true).is_none() {
            break;
        }
        rest = tail;
    }
    assert!(d.ended && d.findings().is_empty());
    d.octets
}

async fn through_socket(data: &'static [u8]) -> (f64, u64) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        s.write_all(b"+OK\r\n").await.expect("write");
        s.write_all(data).await.expect("write");
        let _ = s.shutdown().await;
    });
    let target = Target::parse(&format!("pop3://127.0.0.1:{port}")).expect("target");
    let tls = TlsSettings::new(None, true).expect("tls");
    let mut conn = Conn::connect(&target, &tls, Duration::from_secs(30))
        .await
        .expect("connect");
    let start = Instant::now();
    let _ = conn.read_line(512).await.expect("status");
    let mut d = MultilineDecoder::new();
    loop {
        let line = conn.read_line(64 * 1024).await.expect("line");
        let complete = line.complete;
        if d.feed(line.bytes, complete).is_none() {
            break;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    server.await.expect("server");
    (secs, d.octets)
}

fn main() {
    let mb: usize = std::env::var("MAILCHECK_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let data: &'static [u8] = Box::leak(body(mb).into_boxed_slice());
    let size_mb = data.len() as f64 / 1e6;
    let runs = 7;
    let mut base = Vec::new();
    let mut dec = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(split_only(std::hint::black_box(data)));
        base.push(size_mb / t.elapsed().as_secs_f64());
        let t = Instant::now();
        std::hint::black_box(decode(std::hint::black_box(data)));
        dec.push(size_mb / t.elapsed().as_secs_f64());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let mut sock = Vec::new();
    for _ in 0..5 {
        let (secs, _) = rt.block_on(through_socket(data));
        sock.push(size_mb / secs);
    }
    let (b, d, s) = (median(base), median(dec), median(sock));
    println!("pop3 multi-line reader, {size_mb:.0} MB body, medians of {runs} (socket: 5)");
    println!("  baseline line split (memchr only):   {b:>8.0} MB/s");
    println!(
        "  unstuff + validate, in process:      {d:>8.0} MB/s  ({:.2}x baseline time)",
        b / d
    );
    println!("  same through Conn over loopback TCP: {s:>8.0} MB/s");
}
