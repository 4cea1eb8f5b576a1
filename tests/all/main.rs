//! wasmstream's integration tests: one binary (wasmtime's `tests/all`
//! layout), run against a real Apache Kafka broker (see `support`).

mod chaos;
mod config_errors;
mod pipeline;
mod support;
