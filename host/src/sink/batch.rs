//! Many records for one partition in one librdkafka call
//! (`rd_kafka_produce_batch`), which rust-rdkafka does not wrap: the topic
//! and partition are looked up once per call instead of once per record, and
//! there is no varargs parsing per record. Used for a checkpoint's changelog
//! records (1M for a checkpoint of 1M keys), which go to one partition.

#![allow(unsafe_code)]

use std::ffi::{CString, c_int, c_void};
use std::ptr::null_mut;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaRespErr;

use super::{DeliveryTracker, OPAQUE_CHANGELOG};

/// An application reference to a topic (`rd_kafka_topic_t`), released on drop.
pub struct TopicHandle(*mut rd::rd_kafka_topic_t);

impl TopicHandle {
    pub fn new(producer: &BaseProducer<DeliveryTracker>, topic: &str) -> Result<TopicHandle, KafkaError> {
        let invalid = || KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTopic);
        let name = CString::new(topic).map_err(|_| invalid())?;
        // SAFETY: the client pointer is valid while `producer` lives (it
        // outlives this call); a NULL conf takes the client's topic defaults.
        let rkt = unsafe { rd::rd_kafka_topic_new(producer.client().native_ptr(), name.as_ptr(), null_mut()) };
        if rkt.is_null() { Err(invalid()) } else { Ok(TopicHandle(rkt)) }
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: created by `rd_kafka_topic_new`, destroyed once.
        unsafe { rd::rd_kafka_topic_destroy(self.0) }
    }
}

/// Queues changelog `records` (key, value) for `partition` of `topic`,
/// copied; counts them in the tracker's `changelog_sent` before they can be
/// answered. While librdkafka's queue is
/// full it serves delivery reports and goes on from the first refused record.
pub fn produce<'a>(
    producer: &BaseProducer<DeliveryTracker>,
    topic: &TopicHandle,
    partition: i32,
    records: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Result<(), KafkaError> {
    let mut messages: Vec<rd::rd_kafka_message_t> = records
        .map(|(key, value)| rd::rd_kafka_message_t {
            err: RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
            rkt: null_mut(),
            partition,
            // librdkafka copies (RD_KAFKA_MSG_F_COPY) and never writes them.
            payload: value.map_or(null_mut(), |v| v.as_ptr().cast_mut().cast::<c_void>()),
            len: value.map_or(0, <[u8]>::len),
            key: key.as_ptr().cast_mut().cast::<c_void>(),
            key_len: key.len(),
            offset: 0,
            _private: OPAQUE_CHANGELOG as *mut c_void,
        })
        .collect();
    let sent = &producer.context().changelog_sent;
    let mut from = 0;
    while from < messages.len() {
        let rest = &mut messages[from..];
        let n = rest.len();
        sent.fetch_add(n as u64, Ordering::Release);
        // SAFETY: `rest` is n initialised messages whose key and payload point
        // into buffers that outlive the call (librdkafka copies them, and
        // writes only each message's `err`); `topic` is a live handle.
        let queued = unsafe {
            rd::rd_kafka_produce_batch(
                topic.0,
                partition,
                rd::RD_KAFKA_MSG_F_COPY as c_int,
                rest.as_mut_ptr(),
                n as c_int,
            )
        };
        sent.fetch_sub((n - queued.max(0) as usize) as u64, Ordering::Release);
        // The records before the first refused one are queued; after a full
        // queue every later one is refused with it.
        let Some(refused) = rest.iter().position(|m| m.err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR) else {
            return Ok(());
        };
        let code = RDKafkaErrorCode::from(rest[refused].err);
        if code != RDKafkaErrorCode::QueueFull {
            return Err(KafkaError::MessageProduction(code));
        }
        from += refused;
        producer.poll(Duration::from_millis(5));
    }
    Ok(())
}
