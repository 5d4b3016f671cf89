//! Protocol knowledge, one module per protocol: framing, reply grammar,
//! which commands are legal in which state, and how replies move the state.
//! Everything here is pure (bytes in, findings out) and unit-tested without sockets.

pub mod imap;
pub mod pop3;
pub mod smtp;
