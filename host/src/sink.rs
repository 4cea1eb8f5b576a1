//! Kafka out: the producer every task of a host shares, for outputs and for
//! the changelog.
//!
//! Owns the producer, routing an output to its topic, delivery tracking and,
//! under exactly-once, the transaction. [`Sink::flush`] returns only when every
//! record sent so far is acknowledged, or says which failed: that is what lets
//! a checkpoint promise at-least-once. The offset of each task's last
//! changelog marker is remembered from its delivery report. It does not know
//! about tasks or checkpoints.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::config::Config;
use crate::kafka::{ClientLog, SetIfAbsent, client_config};
use wasmstream_sdk::packed::OutputRef;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot create the Kafka producer: {0}")]
    Create(KafkaError),
    #[error("producing to `{topic}` failed: {source}")]
    Send { topic: String, source: KafkaError },
    #[error("{failed} record(s) were not acknowledged by Kafka; first: {first}")]
    Delivery { failed: u64, first: String },
    #[error("records were not acknowledged within {0:?} ({1} still in flight)")]
    Flush(Duration, i32),
    #[error("{what} failed: {source}")]
    Transaction { what: &'static str, source: KafkaError },
}

impl SinkError {
    /// Whether the producer can go on after this error (after an abort, under
    /// exactly-once). Fatal: fenced by a newer instance, or unusable.
    pub fn is_fatal(&self) -> bool {
        match self {
            SinkError::Create(_) | SinkError::Flush(..) => true,
            SinkError::Transaction { source: KafkaError::Transaction(e), .. } => e.is_fatal(),
            SinkError::Send { source, .. } | SinkError::Transaction { source, .. } => {
                source.rdkafka_error_code() == Some(RDKafkaErrorCode::Fatal)
            }
            SinkError::Delivery { .. } => false,
        }
    }
}

impl SinkError {
    /// Whether a newer producer with the same transactional id (or the group,
    /// for a stale member) has fenced this one.
    pub fn is_fenced(&self) -> bool {
        let code = match self {
            SinkError::Transaction { source: KafkaError::Transaction(e), .. } => Some(e.code()),
            SinkError::Transaction { source, .. } | SinkError::Send { source, .. } => source.rdkafka_error_code(),
            _ => None,
        };
        matches!(
            code,
            Some(
                RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::Fenced
                    | RDKafkaErrorCode::FencedInstanceId
            )
        )
    }
}

/// What a delivery report is about: an output, or the changelog marker of a task.
const OPAQUE_OUTPUT: usize = 0;
const OPAQUE_CHANGELOG: usize = 1;

fn marker_opaque(partition: i32) -> usize {
    2 + partition as usize
}

/// Counts failed deliveries (the first failure is kept for the message) and
/// remembers where each task's last changelog marker landed.
#[derive(Default)]
pub struct DeliveryTracker {
    log: ClientLog,
    failed: AtomicU64,
    first: Mutex<Option<String>>,
    markers: Mutex<HashMap<i32, i64>>,
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
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        match result {
            Err((e, msg)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| format!("to {} partition {}: {e}", msg.topic(), msg.partition()));
            }
            Ok(msg) if opaque >= marker_opaque(0) => {
                let mut markers = self.markers.lock().unwrap_or_else(|p| p.into_inner());
                markers.insert(msg.partition(), msg.offset());
            }
            Ok(_) => {}
        }
    }
}

/// How long a checkpoint waits for acknowledgements, and for each
/// transaction call, before giving up.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Sink {
    producer: BaseProducer<DeliveryTracker>,
    /// Configured output topics; the first is the default.
    outputs: Vec<String>,
    transactional: bool,
    in_transaction: bool,
}

impl Sink {
    /// A producer; with `transactional_id`, a transactional one, initialised
    /// (which fences and aborts what an earlier instance with that id left open).
    pub fn new(config: &Config, transactional_id: Option<&str>) -> Result<Sink, SinkError> {
        let mut cc: ClientConfig = client_config(config, &config.kafka.producer);
        // Retries must neither reorder nor duplicate: every guarantee above `none`
        // relies on the producer's idempotence.
        cc.set_if_absent("enable.idempotence", "true");
        cc.set_if_absent("linger.ms", "5");
        if let Some(id) = transactional_id {
            cc.set("transactional.id", id);
            // Kafka Streams' value under exactly-once: a crashed host's open
            // transaction stops blocking read_committed readers after 10 s.
            cc.set_if_absent("transaction.timeout.ms", "10000");
        }
        let producer: BaseProducer<DeliveryTracker> =
            cc.create_with_context(DeliveryTracker::default()).map_err(SinkError::Create)?;
        if transactional_id.is_some() {
            producer
                .init_transactions(FLUSH_TIMEOUT)
                .map_err(|source| SinkError::Transaction { what: "initialising transactions", source })?;
        }
        Ok(Sink {
            producer,
            outputs: config.processor.outputs.clone(),
            transactional: transactional_id.is_some(),
            in_transaction: false,
        })
    }

    /// The index among the configured outputs of the topic an output goes
    /// to, or `None` if it names another.
    pub fn route(&self, topic: Option<&str>) -> Option<usize> {
        match topic {
            None => (!self.outputs.is_empty()).then_some(0),
            Some(t) => self.outputs.iter().position(|o| o == t),
        }
    }

    pub fn outputs(&self) -> &[String] {
        &self.outputs
    }

    fn begin_if_needed(&mut self) -> Result<(), SinkError> {
        if self.transactional && !self.in_transaction {
            self.producer
                .begin_transaction()
                .map_err(|source| SinkError::Transaction { what: "beginning a transaction", source })?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Queues one output record for output topic `output` (see [`Sink::route`]);
    /// waits while the local queue is full.
    pub fn send(&mut self, output: usize, out: &OutputRef<'_>, input_timestamp: Option<i64>) -> Result<(), SinkError> {
        self.begin_if_needed()?;
        let topic = self.outputs[output].as_str();
        let mut record = BaseRecord::with_opaque_to(topic, OPAQUE_OUTPUT);
        if let Some(k) = out.key {
            record = record.key(k);
        }
        if let Some(v) = out.value {
            record = record.payload(v);
        }
        if let Some(ts) = out.timestamp.or(input_timestamp) {
            record = record.timestamp(ts);
        }
        if !out.headers.is_empty() {
            let mut h = OwnedHeaders::new_with_capacity(out.headers.len() as usize);
            for (key, value) in out.headers.iter() {
                h = h.insert(KafkaHeader { key, value });
            }
            record = record.headers(h);
        }
        self.enqueue(record)
    }

    /// Queues one changelog record for a task's partition; `marker` records
    /// have their offset remembered (see [`Sink::marker_offset`]).
    pub fn send_changelog(
        &mut self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        marker: bool,
    ) -> Result<(), SinkError> {
        self.begin_if_needed()?;
        let opaque = if marker { marker_opaque(partition) } else { OPAQUE_CHANGELOG };
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, opaque).partition(partition).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        self.enqueue(record)
    }

    fn enqueue(&self, mut record: BaseRecord<'_, [u8], [u8], usize>) -> Result<(), SinkError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                // A transaction refuses new records once one of its records
                // failed: that failure is the cause worth naming.
                Err((source, r)) => {
                    let _ = self.drain();
                    return Err(self
                        .delivery_failure()
                        .unwrap_or(SinkError::Send { topic: r.topic.to_string(), source }));
                }
            }
        }
    }

    /// The delivery failures seen since the last abort, if any.
    fn delivery_failure(&self) -> Option<SinkError> {
        let ctx = self.producer.context();
        match ctx.failed.load(Ordering::Relaxed) {
            0 => None,
            failed => {
                let first = ctx.first.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
                Some(SinkError::Delivery { failed, first })
            }
        }
    }

    /// Where the last acknowledged changelog marker of `partition` landed.
    pub fn marker_offset(&self, partition: i32) -> Option<i64> {
        let markers = self.producer.context().markers.lock().unwrap_or_else(|p| p.into_inner());
        markers.get(&partition).copied()
    }

    /// Serves delivery reports without blocking.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Serves delivery reports until none is outstanding.
    fn drain(&self) -> Result<(), SinkError> {
        // rdkafka's `flush` sleeps in 100 ms steps once the queue is not empty;
        // a checkpoint stalls processing while it waits, so poll in short steps.
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() > deadline {
                return Err(SinkError::Flush(FLUSH_TIMEOUT, self.producer.in_flight_count()));
            }
            self.producer.poll(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Waits until every record sent so far is acknowledged; fails if any was not.
    pub fn flush(&self) -> Result<(), SinkError> {
        self.drain()?;
        self.delivery_failure().map_or(Ok(()), Err)
    }

    /// Whether a transaction is open (exactly-once, with records sent since
    /// the last commit or abort).
    pub fn in_transaction(&self) -> bool {
        self.in_transaction
    }

    /// Commits the open transaction with the consumer's `offsets`: the
    /// outputs, the changelog records and the input offsets become visible
    /// together. Flushes first, so every delivery report (marker offsets,
    /// failures) has been seen.
    pub fn commit_transaction(
        &mut self,
        offsets: &TopicPartitionList,
        group: &ConsumerGroupMetadata,
    ) -> Result<(), SinkError> {
        if !self.in_transaction {
            return Ok(());
        }
        self.flush()?;
        let tx = |what| move |source| SinkError::Transaction { what, source };
        self.producer
            .send_offsets_to_transaction(offsets, group, FLUSH_TIMEOUT)
            .map_err(tx("adding the input offsets to the transaction"))?;
        self.producer.commit_transaction(FLUSH_TIMEOUT).map_err(tx("committing the transaction"))?;
        self.in_transaction = false;
        Ok(())
    }

    /// Aborts the open transaction (if any) and forgets its delivery failures.
    pub fn abort_transaction(&mut self) -> Result<(), SinkError> {
        if self.in_transaction {
            // librdkafka aborts only once every delivery report has been served.
            self.drain()?;
            self.producer
                .abort_transaction(FLUSH_TIMEOUT)
                .map_err(|source| SinkError::Transaction { what: "aborting the transaction", source })?;
            self.in_transaction = false;
        }
        let ctx = self.producer.context();
        ctx.failed.store(0, Ordering::Relaxed);
        *ctx.first.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(())
    }
}
