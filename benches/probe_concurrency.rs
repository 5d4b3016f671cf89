//! Probing several endpoints runs them concurrently: three embedded servers
//! that each delay their greeting by 300 ms, probed one at a time and then
//! together. Prints medians and the ratio of "together" to the slowest single
//! endpoint (target: under 1.2).
//!
//! Run: `cargo bench --bench probe_concurrency`

use mailcheck::probe::dns::StaticResolver;
use mailcheck::probe::{probe_all, Endpoint, ProbeConfig, Service, TlsMode};
use mailcheck::secret::Secret;
use mailcheck::server::{self, ServerConfig, Store, TlsIdentity};
use mailcheck::wire::TlsSettings;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut servers = Vec::new();
        let mut endpoints = Vec::new();
        let mut roots = String::new();
        for i in 0..3 {
            let host = format!("mail{i}.example.test");
            let identity = TlsIdentity::generate(&[host.as_str()]).expect("identity");
            roots.push_str(&identity.cert_pem);
            let mut config = ServerConfig::new(Arc::new(Store::fixture()), Arc::new(identity));
            config.greeting_delay = Duration::from_millis(300);
            let s = server::start(config).await.expect("server");
            endpoints.push(Endpoint {
                service: Service::Pop3,
                host,
                port: s.pop3s_addr.expect("pop3s").port(),
                tls: TlsMode::Implicit,
                source: "bench".into(),
            });
            servers.push(s);
        }
        let mut resolver = StaticResolver::new();
        for ep in &endpoints {
            resolver = resolver.ip(&ep.host, IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        let config = ProbeConfig {
            resolver: Arc::new(resolver),
            pins: Vec::new(),
            tls: TlsSettings::with_pem_roots(&roots).expect("roots"),
            timeout: Duration::from_secs(10),
            user: Some("alice".into()),
            password: Some(Secret::new("alice-demo-pw")),
        };
        let runs = 7;
        let mut single = vec![Vec::new(); endpoints.len()];
        let mut together = Vec::new();
        for _ in 0..runs {
            for (i, ep) in endpoints.iter().enumerate() {
                let t = Instant::now();
                let r = probe_all(vec![ep.clone()], &config).await;
                assert!(r[0].usable, "endpoint {i} not usable");
                single[i].push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let t = Instant::now();
            let r = probe_all(endpoints.clone(), &config).await;
            assert!(r.iter().all(|r| r.usable));
            together.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let singles: Vec<f64> = single.into_iter().map(median).collect();
        let slowest = singles.iter().cloned().fold(0.0, f64::max);
        let all = median(together);
        println!(
            "probe of 3 POP3S endpoints (greeting delayed 300 ms each, login + STAT), medians of {runs}"
        );
        for (i, s) in singles.iter().enumerate() {
            println!("  endpoint {i} alone: {s:7.1} ms");
        }
        println!("  all three together: {all:7.1} ms");
        println!(
            "  ratio together / slowest single: {:.2} (target < 1.20)",
            all / slowest
        );
        for s in servers {
            s.shutdown().await;
        }
    });
}
