//! wasmstream's integration tests: one binary (wasmtime's `tests/all`
//! layout), run against a real Apache Kafka broker (see `support`).

mod changelog;
mod chaos;
mod config_errors;
mod conformance;
mod demo;
mod eos;
mod languages;
mod pipeline;
mod support;
mod swap;
mod worlds;
