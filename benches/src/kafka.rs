//! Broker helpers for the benchmark: topics, bulk produce, watermarks.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

pub fn create_topic(bootstrap: &str, name: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for r in rt.block_on(admin.create_topics([&topic], &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// Deletes every topic this process created (its name starts with
/// [`crate::throughput::own_prefix`]: outputs, inputs, changelogs, Kafka
/// Streams' internal topics) but those in `keep`. Without it a full run
/// left ~30 GB on the broker, and filled the disk when repeated.
pub fn delete_own_topics(bootstrap: &str, keep: &[&str]) -> anyhow::Result<()> {
    let prefix = crate::throughput::own_prefix();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(30))?;
    let doomed: Vec<&str> =
        metadata.topics().iter().map(|t| t.name()).filter(|n| n.starts_with(&prefix) && !keep.contains(n)).collect();
    if doomed.is_empty() {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for r in rt.block_on(admin.delete_topics(&doomed, &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("deleting topic {t}: {e}"))?;
    }
    Ok(())
}

/// Produces every `(key, value)` and waits for the acknowledgements.
pub fn produce(bootstrap: &str, topic: &str, records: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> anyhow::Result<()> {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "20")
        .set("batch.size", "1000000")
        .create()?;
    for (k, v) in records {
        let mut rec = BaseRecord::to(topic).key(&k).payload(&v);
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(5));
                }
            }
        }
    }
    p.flush(Duration::from_secs(120))?;
    Ok(())
}

/// Reads how many records of a topic's partition 0 a `read_committed`
/// consumer can see (the last stable offset: below an open transaction's
/// first record), cheaply and often.
pub struct Watermark {
    consumer: BaseConsumer,
    topic: String,
}

impl Watermark {
    pub fn new(bootstrap: &str, topic: &str) -> anyhow::Result<Self> {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("isolation.level", "read_committed")
            .create()?;
        Ok(Watermark { consumer, topic: topic.to_string() })
    }

    pub fn high(&self) -> i64 {
        self.high_of(0)
    }

    pub fn high_of(&self, partition: i32) -> i64 {
        self.consumer.fetch_watermarks(&self.topic, partition, Duration::from_secs(5)).map_or(0, |(_, h)| h)
    }
}

/// Reads `topic` (partition 0, read_committed) from the beginning until
/// `n` records arrived (or 120 s passed) and returns each key's last value:
/// for a word count, the final count of every word.
pub fn last_values(
    bootstrap: &str,
    topic: &str,
    n: usize,
) -> anyhow::Result<std::collections::HashMap<Vec<u8>, Vec<u8>>> {
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("{topic}-verify"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut last = std::collections::HashMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut seen = 0;
    while seen < n {
        anyhow::ensure!(std::time::Instant::now() < deadline, "{topic}: {seen} of {n} records within 120 s");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            last.insert(m.key().unwrap_or_default().to_vec(), m.payload().unwrap_or_default().to_vec());
            seen += 1;
        }
    }
    Ok(last)
}
