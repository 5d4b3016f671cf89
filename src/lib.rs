//! mailcheck: test mail servers against the RFCs (POP3, IMAP and SMTP)
//! and diagnose their endpoints (`probe`).
//!
//! The flow: scenario files are loaded into pure data ([`scenario`]), the
//! runner ([`run`]) replays them over a connection ([`wire`]) through the
//! protocol's grammar and state model ([`proto`]), producing outcomes that
//! the reporters ([`report`]) render. [`server`] is the embedded reference
//! server used by `demo`, `serve` and the tests; [`probe`] is the diagnostic
//! check chain.

pub mod app;
pub mod cli;
pub mod finding;
pub mod probe;
pub mod probe_cmd;
pub mod proto;
pub mod report;
pub mod run;
pub mod scenario;
pub mod secret;
pub mod serve;
pub mod server;
pub mod wire;
