//! Running scenarios: one scenario ([`runner`]), the whole run with
//! discovery and filters ([`schedule`]), and the outcome types the
//! reporters consume ([`outcome`]).

pub mod body;
mod imap;
pub mod outcome;
pub mod runner;
pub mod schedule;
mod smtp;

pub use outcome::*;
pub use runner::{RunConfig, ServerInfo};
pub use schedule::{run_all, Event};
