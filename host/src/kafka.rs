//! What the consumer and the producer share: client configuration from
//! `Config` and librdkafka's log lines routed to `tracing`.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

use crate::config::Config;

/// `bootstrap.servers`, then `[kafka]`, then the client's own section.
pub fn client_config(config: &Config, specific: &BTreeMap<String, String>) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.bootstrap_servers);
    cc.set_log_level(RDKafkaLogLevel::Warning);
    for (k, v) in config.kafka.common.iter().chain(specific) {
        cc.set(k, v);
    }
    // librdkafka's `debug` contexts log at debug level: let them through
    // (to `tracing`, which RUST_LOG / --log-level filter) when asked for.
    if cc.get("debug").is_some() {
        cc.set_log_level(RDKafkaLogLevel::Debug);
    }
    cc
}

/// Extension used by the clients: set a property unless the user did.
pub trait SetIfAbsent {
    fn set_if_absent(&mut self, key: &str, value: &str) -> &mut Self;
}

impl SetIfAbsent for ClientConfig {
    fn set_if_absent(&mut self, key: &str, value: &str) -> &mut Self {
        if self.get(key).is_none() {
            self.set(key, value);
        }
        self
    }
}

/// librdkafka's logs and client errors, as `tracing` events.
#[derive(Debug, Default)]
pub struct ClientLog;

impl ClientLog {
    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        use RDKafkaLogLevel::*;
        match level {
            Emerg | Alert | Critical | Error => {
                tracing::error!(target: "librdkafka", "{fac}: {message}")
            }
            Warning => tracing::warn!(target: "librdkafka", "{fac}: {message}"),
            Notice | Info => tracing::info!(target: "librdkafka", "{fac}: {message}"),
            Debug => tracing::debug!(target: "librdkafka", "{fac}: {message}"),
        }
    }

    pub fn error(&self, client: &str, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", "{client}: {error}: {reason}");
    }
}
