//! wasmstream's integration tests: one binary (wasmtime's `tests/all`
//! layout), run against a real Apache Kafka broker (see `support`).

mod changelog;
mod chaos;
mod config_errors;
mod demo;
mod eos;
mod pipeline;
mod support;
mod worlds;
