//! The network edge: targets, connections (plain, implicit TLS, STLS
//! upgrade), a bounded line reader where every wait has a deadline, and
//! certificate capture for diagnosis.

pub mod conn;
pub mod target;
pub mod tls;

pub use conn::{Conn, Line, TlsInfo, WireError};
pub use target::{Security, Target, TargetError};
pub use tls::{CertProblemKind, CertReport, TlsSettings};
