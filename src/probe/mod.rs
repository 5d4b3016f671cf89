//! `mailcheck probe`: find a provider's or domain's endpoints, run the
//! check chain on each (all at once), and explain failures in plain words.
//!
//! `model` holds the shared types, `presets`/`dns`/`discover`/`targets` say
//! where endpoints come from, `chain` checks one endpoint layer by layer,
//! `advice` turns what was seen into a cause and a fix, `report` renders.

pub mod advice;
pub mod chain;
pub mod discover;
pub mod dns;
pub mod model;
pub mod presets;
pub mod report;
pub mod targets;

pub use chain::{probe_all, EndpointReport, Pin, ProbeConfig};
pub use model::{Endpoint, Service, TlsMode};
pub use report::ProbeReport;
