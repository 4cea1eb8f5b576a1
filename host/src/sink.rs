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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

mod batch;

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

/// What a delivery report is about, in a record's opaque (low two bits): an
/// output of the even or odd epoch, a changelog record, or the changelog
/// marker of a task (its partition in the bits above).
const OPAQUE_OUTPUT: usize = 0; // + the epoch's parity
const OPAQUE_CHANGELOG: usize = 2;
const OPAQUE_MARKER: usize = 3;

fn marker_opaque(partition: i32) -> usize {
    (partition as usize) << 2 | OPAQUE_MARKER
}

/// Counts answered and failed deliveries (the first failure is kept for the
/// message) and remembers where each task's last changelog marker landed.
#[derive(Default)]
pub struct DeliveryTracker {
    log: ClientLog,
    failed: AtomicU64,
    first: Mutex<Option<String>>,
    markers: Mutex<HashMap<i32, i64>>,
    /// Outputs answered (acknowledged or failed), by the epoch's parity.
    outputs_done: [AtomicU64; 2],
    changelog_sent: AtomicU64,
    changelog_done: AtomicU64,
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
            Ok(msg) if opaque & 3 == OPAQUE_MARKER => {
                let mut markers = self.markers.lock().unwrap_or_else(|p| p.into_inner());
                markers.insert(msg.partition(), msg.offset());
            }
            Ok(_) => {}
        }
        // After the failure is counted: whoever waits for this record sees it.
        let done = match opaque & 3 {
            epoch @ (0 | 1) => &self.outputs_done[epoch],
            _ => &self.changelog_done,
        };
        done.fetch_add(1, Ordering::Release);
    }
}

/// How long a checkpoint waits for acknowledgements, and for each
/// transaction call, before giving up.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

type Shared = Arc<BaseProducer<DeliveryTracker>>;

pub struct Sink {
    producer: Shared,
    /// Configured output topics; the first is the default.
    outputs: Vec<String>,
    transactional: bool,
    in_transaction: bool,
    /// The parity of the outputs' epoch, and the outputs sent in each.
    epoch: usize,
    outputs_sent: [u64; 2],
}

/// The outputs sent before a checkpoint's cut (see [`Sink::cut`]).
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    epoch: usize,
    sent: u64,
}

/// Where a checkpoint's changelog records go: the sink (in the open
/// transaction, under exactly-once) or a [`ChangelogWriter`] on the thread
/// that writes the checkpoint.
pub trait ChangelogSend {
    /// The producer, ready for a changelog record.
    fn changelog_producer(&mut self) -> Result<&BaseProducer<DeliveryTracker>, SinkError>;

    /// Queues one changelog record for a task's partition; a `marker`'s
    /// offset is remembered (see [`Sink::marker_offset`]).
    fn send_changelog(
        &mut self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        marker: bool,
    ) -> Result<(), SinkError> {
        let producer = self.changelog_producer()?;
        let opaque = if marker { marker_opaque(partition) } else { OPAQUE_CHANGELOG };
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, opaque).partition(partition).key(key);
        if let Some(v) = value {
            record = record.payload(v);
        }
        let sent = &producer.context().changelog_sent;
        sent.fetch_add(1, Ordering::Release);
        enqueue(producer, record).inspect_err(|_| {
            sent.fetch_sub(1, Ordering::Release);
        })
    }

    /// Queues changelog records for a task's partition, each keyed
    /// `key_prefix` + its key (a value of `None`: a tombstone), in chunks of
    /// [`CHANGELOG_CHUNK`] (see [`batch::produce`]). The 1M records of a
    /// 1M-key checkpoint were queued in 560–620 ms this way, in 870–950 ms
    /// with a `send_changelog` each (BENCHMARKS.md).
    fn send_changelog_entries<'a>(
        &mut self,
        topic: &str,
        partition: i32,
        key_prefix: &[u8],
        entries: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> Result<(), SinkError> {
        let mut entries = entries.peekable();
        if entries.peek().is_none() {
            return Ok(());
        }
        let producer = self.changelog_producer()?;
        let failed = |source| refused(producer, topic, source);
        let handle = batch::TopicHandle::new(producer, topic).map_err(failed)?;
        let mut keys = Vec::new();
        let mut chunk = Vec::with_capacity(CHANGELOG_CHUNK);
        while entries.peek().is_some() {
            keys.clear();
            chunk.clear();
            for (k, v) in entries.by_ref().take(CHANGELOG_CHUNK) {
                let start = keys.len();
                keys.extend_from_slice(key_prefix);
                keys.extend_from_slice(k);
                chunk.push((start..keys.len(), v));
            }
            let records = chunk.iter().map(|(key, v)| (&keys[key.clone()], *v));
            batch::produce(producer, &handle, partition, records).map_err(failed)?;
        }
        Ok(())
    }
}

/// Changelog records per `rd_kafka_produce_batch` call.
const CHANGELOG_CHUNK: usize = 4096;

impl Sink {
    /// A producer; with `transactional_id`, a transactional one, initialised
    /// (which fences and aborts what an earlier instance with that id left open).
    pub fn new(config: &Config, transactional_id: Option<&str>) -> Result<Sink, SinkError> {
        let mut cc: ClientConfig = client_config(config, &config.kafka.producer);
        // Retries must neither reorder nor duplicate: every guarantee above `none`
        // relies on the producer's idempotence.
        cc.set_if_absent("enable.idempotence", "true");
        cc.set_if_absent("linger.ms", "5");
        // A keyed output goes where a Java producer (and so Kafka Streams)
        // would put it, murmur2 of the key: a downstream join or aggregation
        // co-partitioned with Java-produced topics sees each key on one
        // partition. librdkafka's default, `consistent_random`, is CRC32.
        cc.set_if_absent("partitioner", "murmur2_random");
        if let Some(id) = transactional_id {
            cc.set("transactional.id", id);
            // Kafka Streams' value under exactly-once: a crashed host's open
            // transaction stops blocking read_committed readers after 10 s.
            cc.set_if_absent("transaction.timeout.ms", "10000");
        }
        let producer: Shared = Arc::new(cc.create_with_context(DeliveryTracker::default()).map_err(SinkError::Create)?);
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
            epoch: 0,
            outputs_sent: [0; 2],
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
        let mut record = BaseRecord::with_opaque_to(topic, OPAQUE_OUTPUT + self.epoch);
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
        enqueue(&self.producer, record)?;
        self.outputs_sent[self.epoch] += 1;
        Ok(())
    }

    /// Ends the outputs' epoch: what was sent so far belongs to a checkpoint
    /// cut now, and [`ChangelogWriter::wait_outputs`] waits for it alone.
    /// Two epochs share the counters: the one before must be answered.
    pub fn cut(&mut self) -> Cut {
        let cut = Cut { epoch: self.epoch, sent: self.outputs_sent[self.epoch] };
        self.epoch ^= 1;
        cut
    }

    /// A handle that writes changelog records from another thread, on this
    /// sink's producer (at-least-once: no transaction).
    pub fn changelog_writer(&self) -> ChangelogWriter {
        ChangelogWriter { producer: Arc::clone(&self.producer) }
    }

    /// Where the last acknowledged changelog marker of `partition` landed.
    pub fn marker_offset(&self, partition: i32) -> Option<i64> {
        marker_offset(&self.producer, partition)
    }

    /// Serves delivery reports without blocking.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until every record sent so far is acknowledged; fails if any was not.
    pub fn flush(&self) -> Result<(), SinkError> {
        wait(&self.producer, || self.producer.in_flight_count() == 0)
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
            drain(&self.producer, || self.producer.in_flight_count() == 0)?;
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

impl ChangelogSend for Sink {
    /// Under exactly-once, in the open transaction.
    fn changelog_producer(&mut self) -> Result<&BaseProducer<DeliveryTracker>, SinkError> {
        self.begin_if_needed()?;
        Ok(&self.producer)
    }
}

/// Writes a checkpoint's changelog records, and waits for what the
/// checkpoint stands for, on the thread that writes the checkpoint.
pub struct ChangelogWriter {
    producer: Shared,
}

impl ChangelogWriter {
    /// Waits until every output sent before `cut` is answered; fails if any
    /// record failed.
    pub fn wait_outputs(&self, cut: Cut) -> Result<(), SinkError> {
        let done = &self.producer.context().outputs_done[cut.epoch];
        wait(&self.producer, || done.load(Ordering::Acquire) >= cut.sent)
    }

    /// Waits until every changelog record sent so far is answered; fails if
    /// any record failed.
    pub fn wait_changelog(&self) -> Result<(), SinkError> {
        let ctx = self.producer.context();
        let sent = ctx.changelog_sent.load(Ordering::Acquire);
        wait(&self.producer, || ctx.changelog_done.load(Ordering::Acquire) >= sent)
    }

    /// Where the last acknowledged changelog marker of `partition` landed.
    pub fn marker_offset(&self, partition: i32) -> Option<i64> {
        marker_offset(&self.producer, partition)
    }
}

impl ChangelogSend for ChangelogWriter {
    fn changelog_producer(&mut self) -> Result<&BaseProducer<DeliveryTracker>, SinkError> {
        Ok(&self.producer)
    }
}

/// Queues a record, serving delivery reports while librdkafka's queue is full.
fn enqueue(
    producer: &BaseProducer<DeliveryTracker>,
    mut record: BaseRecord<'_, [u8], [u8], usize>,
) -> Result<(), SinkError> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((source, r)) => return Err(refused(producer, r.topic, source)),
        }
    }
}

/// Why librdkafka refused a record for `topic` with `source`: a transaction
/// refuses new records once one of its records failed, and that failure
/// (once every record in flight is answered) is the cause worth naming.
fn refused(producer: &BaseProducer<DeliveryTracker>, topic: &str, source: KafkaError) -> SinkError {
    let _ = drain(producer, || producer.in_flight_count() == 0);
    delivery_failure(producer).unwrap_or(SinkError::Send { topic: topic.to_string(), source })
}

/// The delivery failures seen since the last abort, if any.
fn delivery_failure(producer: &BaseProducer<DeliveryTracker>) -> Option<SinkError> {
    let ctx = producer.context();
    match ctx.failed.load(Ordering::Relaxed) {
        0 => None,
        failed => {
            let first = ctx.first.lock().unwrap_or_else(|p| p.into_inner()).clone().unwrap_or_default();
            Some(SinkError::Delivery { failed, first })
        }
    }
}

fn marker_offset(producer: &BaseProducer<DeliveryTracker>, partition: i32) -> Option<i64> {
    let markers = producer.context().markers.lock().unwrap_or_else(|p| p.into_inner());
    markers.get(&partition).copied()
}

/// Serves delivery reports until `done`.
fn drain(producer: &BaseProducer<DeliveryTracker>, done: impl Fn() -> bool) -> Result<(), SinkError> {
    // rdkafka's `flush` sleeps in 100 ms steps once the queue is not empty;
    // a checkpoint stalls processing while it waits, so poll in short steps.
    let deadline = Instant::now() + FLUSH_TIMEOUT;
    while !done() {
        if Instant::now() > deadline {
            return Err(SinkError::Flush(FLUSH_TIMEOUT, producer.in_flight_count()));
        }
        producer.poll(Duration::from_millis(1));
    }
    Ok(())
}

/// [`drain`], then fails if any record failed.
fn wait(producer: &BaseProducer<DeliveryTracker>, done: impl Fn() -> bool) -> Result<(), SinkError> {
    drain(producer, done)?;
    delivery_failure(producer).map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::mocking::MockCluster;
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

    use super::*;

    #[test]
    fn changelog_entries_go_on_after_a_full_queue_each_once_in_order() {
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("cl", 2, 1).expect("topic");
        let bootstrap = cluster.bootstrap_servers();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("m.wasm"), b"").expect("module file");
        // A queue of 100 records, for 10,000: the batch is refused over and over.
        let text = format!(
            "application.id = \"t\"\nbootstrap.servers = \"{bootstrap}\"\n[processor]\nmodule = \"m.wasm\"\n\
             inputs = [\"in\"]\noutputs = [\"out\"]\n[kafka.producer]\n\"queue.buffering.max.messages\" = \"100\"\n"
        );
        let config = crate::config::parse(&text, None, dir.path(), &[]).expect("config");
        let sink = Sink::new(&config, None).expect("sink");
        let mut writer = sink.changelog_writer();
        let entries: Vec<(Vec<u8>, Option<Vec<u8>>)> = (0..10_000)
            .map(|i| (format!("k{i}").into_bytes(), (i % 7 != 0).then(|| i.to_string().into_bytes())))
            .collect();
        writer
            .send_changelog_entries("cl", 1, b"s/", entries.iter().map(|(k, v)| (k.as_slice(), v.as_deref())))
            .expect("send");
        writer.wait_changelog().expect("every record acknowledged");

        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", "reader")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("cl", 1, Offset::Beginning).expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let mut read = Vec::new();
        while read.len() < entries.len() {
            let m = consumer.poll(Duration::from_secs(10)).expect("a record within 10 s").expect("no error");
            read.push((m.key().map(<[u8]>::to_vec).unwrap_or_default(), m.payload().map(<[u8]>::to_vec)));
        }
        let expected: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            entries.iter().map(|(k, v)| ([&b"s/"[..], k].concat(), v.clone())).collect();
        assert_eq!(read, expected);
        assert!(consumer.poll(Duration::from_millis(500)).is_none(), "nothing more");
    }
}
