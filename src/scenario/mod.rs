//! The scenario language: YAML C:/S: transcripts loaded into plain data.
//!
//! `model` holds the types the runner consumes, `load` turns YAML into them
//! with `file:line:column` errors, `template` handles `${var}` references and
//! `pattern` the `*` / `{capture}` reply patterns.

pub mod load;
pub mod model;
pub mod pattern;
pub mod template;

pub use load::{collect_files, load_file, load_str, LoadError};
pub use model::*;
