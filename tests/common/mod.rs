//! Helpers shared by the integration tests: run the binary with a hard
//! deadline (a hang fails the test instead of wedging it), temp files.
#![allow(dead_code)]

pub mod certs;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Run `mailcheck ARGS` with extra environment, killing it after `limit`.
pub fn mailcheck_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailcheck"));
    cmd.args(args)
        .env_remove("MAILCHECK_PASSWORD")
        .env("NO_COLOR", "1")
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn mailcheck");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mailcheck {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code().unwrap_or(-1),
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

pub fn mailcheck(args: &[&str]) -> Output {
    mailcheck_env(args, &[], Duration::from_secs(60))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scenario file in a fresh temp dir under a `pop3/` folder.
pub fn scenario_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let folder = dir.join("pop3");
    std::fs::create_dir_all(&folder).expect("mkdir");
    let path = folder.join(name);
    std::fs::write(&path, text).expect("write scenario");
    path
}

/// KEY=VALUE settings a server start script wrote (ci/dovecot, ci/postfix),
/// read from the file named by `var`. `None` (the test skips) when `var`
/// is unset, unless `require` is set too (as in CI): then that fails.
pub fn env_file(var: &str, require: &str) -> Option<std::collections::HashMap<String, String>> {
    let path = match std::env::var(var) {
        Ok(p) => p,
        Err(_) => {
            assert!(
                std::env::var_os(require).is_none(),
                "{require} is set but {var} is not: start the servers with ci/test"
            );
            eprintln!("skipped: no {var} (run the tests through ci/test)");
            return None;
        }
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    Some(
        text.lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
    )
}
