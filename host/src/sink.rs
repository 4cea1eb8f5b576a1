//! Kafka out: the producer every task of a host shares.
//!
//! Owns the producer, routing an output to its topic, and delivery tracking:
//! [`Sink::flush`] returns only when every record sent so far is acknowledged,
//! or says which failed. That is what lets a checkpoint promise at-least-once.
//! It does not know about tasks or offsets.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::config::Config;
use crate::guest::OutputRecord;
use crate::kafka::{ClientLog, SetIfAbsent, client_config};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(KafkaError),
    #[error("producing to `{topic}` failed: {source}")]
    Send { topic: String, source: KafkaError },
    #[error("{failed} output record(s) were not acknowledged by Kafka; first: {first}")]
    Delivery { failed: u64, first: String },
    #[error("outputs were not acknowledged within {0:?} ({1} still in flight)")]
    Flush(Duration, i32),
}

/// Counts failed deliveries; the first failure is kept for the message.
#[derive(Default)]
pub struct DeliveryTracker {
    log: ClientLog,
    failed: AtomicU64,
    first: Mutex<Option<String>>,
}

impl rdkafka::ClientContext for DeliveryTracker {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log.log(level, fac, log_message)
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.log.error("producer", error, reason)
    }
}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| format!("to {} partition {}: {e}", msg.topic(), msg.partition()));
        }
    }
}

/// How long a checkpoint waits for acknowledgements before giving up.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Sink {
    producer: BaseProducer<DeliveryTracker>,
    /// Configured output topics; the first is the default.
    outputs: Vec<String>,
}

impl Sink {
    pub fn new(config: &Config) -> Result<Sink, SinkError> {
        let mut cc: ClientConfig = client_config(config, &config.kafka.producer);
        // Retries must neither reorder nor duplicate: every guarantee above `none`
        // relies on the producer's idempotence.
        cc.set_if_absent("enable.idempotence", "true");
        cc.set_if_absent("linger.ms", "5");
        let producer = cc.create_with_context(DeliveryTracker::default()).map_err(SinkError::Create)?;
        Ok(Sink { producer, outputs: config.processor.outputs.clone() })
    }

    /// The configured topic an output goes to, or `None` if it names another.
    pub fn route<'a>(&'a self, out: &OutputRecord) -> Option<&'a str> {
        match &out.topic {
            None => self.outputs.first().map(String::as_str),
            Some(t) => self.outputs.iter().find(|o| *o == t).map(String::as_str),
        }
    }

    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    /// Queues one record; waits while the local queue is full.
    pub fn send(&self, topic: &str, out: &OutputRecord, input_timestamp: Option<i64>) -> Result<(), SinkError> {
        let mut record = BaseRecord::to(topic);
        if let Some(k) = &out.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &out.value {
            record = record.payload(v.as_slice());
        }
        if let Some(ts) = out.timestamp.or(input_timestamp) {
            record = record.timestamp(ts);
        }
        if !out.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(out.headers.len());
            for header in &out.headers {
                h = h.insert(KafkaHeader { key: &header.key, value: header.value.as_deref() });
            }
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((source, _)) => return Err(SinkError::Send { topic: topic.to_string(), source }),
            }
        }
    }

    /// Serves delivery reports without blocking.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until every record sent so far is acknowledged; fails if any was not.
    pub fn flush(&self) -> Result<(), SinkError> {
        // rdkafka's `flush` sleeps in 100 ms steps once the queue is not empty;
        // a checkpoint stalls processing while it waits, so poll in short steps.
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                return Err(SinkError::Flush(FLUSH_TIMEOUT, self.producer.in_flight_count()));
            }
            self.producer.poll(Duration::from_millis(1));
        }
        let ctx = self.producer.context();
        match ctx.failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            failed => {
                let first = ctx.first.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
                Err(SinkError::Delivery { failed, first })
            }
        }
    }
}
