//! Reporters: each consumes the runner's events or its final report and
//! never talks to the network. `details` renders a scenario's failure the
//! same way for the console (styled) and for JUnit (plain).

pub mod console;
pub mod details;
pub mod json;
pub mod junit;
