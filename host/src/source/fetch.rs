//! Records in batches: the assigned partitions' records go to a queue of
//! the host's own ([`FetchQueue`]), which one `rd_kafka_consume_batch_queue`
//! call drains up to [`FETCH_BATCH`] records at a time. rust-rdkafka wraps
//! neither: its `poll` returns one record per call, and each call looked at
//! the clock four times, allocated and freed a reference count for the
//! record's event, and took the queue's lock (~15% of the processing
//! thread's time in the per-key count, measured with `perf`).
//!
//! The consumer's own queue keeps everything else: rebalances, errors,
//! commits (`BaseConsumer::poll` serves them, and any record that reached it
//! before its partition was forwarded). A partition's records are forwarded
//! to the fetch queue in the rebalance callback, before the partition is
//! assigned ([`forward`]), so none of them can arrive through both queues
//! out of order. While the processing thread waits for records on the fetch
//! queue, an event arriving on the consumer's queue wakes it (a callback
//! that yields the fetch queue), so a rebalance is served at once.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_int, c_void};
use std::marker::PhantomData;
use std::ptr::null_mut;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, Timestamp};
use rdkafka::types::RDKafkaRespErr;

/// Records taken from the fetch queue in one call, at most. The
/// processing loop serves delivery reports and checks the clock once per
/// call (as it did every 64 records before): with 256, the exactly-once word
/// count (16 outputs a record) ran at 47.6k, 37.5k, 45.3k sentences/s
/// against 51.0k, 46.1k, 50.8k with 64 (alternating pairs), and no row was
/// faster with 256.
pub const FETCH_BATCH: usize = 64;

/// The host's queue of fetched records; see the module docs. Dropped before
/// its consumer (librdkafka requires an application's queues to go first).
pub struct FetchQueue<'c> {
    queue: *mut rd::rd_kafka_queue_t,
    /// The consumer's own queue, whose new events wake a wait on `queue`.
    events: *mut rd::rd_kafka_queue_t,
    /// Where the rebalance callback finds `queue` (see [`forward`]), while it exists.
    shown: Option<&'c AtomicPtr<rd::rd_kafka_queue_t>>,
    /// The consumer's client, valid while the consumer lives.
    rk: *mut rd::rd_kafka_t,
    taken: Vec<*mut rd::rd_kafka_message_t>,
}

/// Wakes a wait on the fetch queue (`opaque`) when the consumer's queue gets an event.
unsafe extern "C" fn wake(_rk: *mut rd::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the fetch queue, which disables this callback
    // before it is destroyed.
    unsafe { rd::rd_kafka_queue_yield(opaque.cast()) }
}

impl<'c> FetchQueue<'c> {
    /// A fetch queue of `consumer`, stored in `shown` for its rebalance
    /// callback to [`forward`] assigned partitions to.
    pub fn new<C: ConsumerContext>(
        consumer: &'c BaseConsumer<C>,
        shown: Option<&'c AtomicPtr<rd::rd_kafka_queue_t>>,
    ) -> FetchQueue<'c> {
        let rk = consumer.client().native_ptr();
        // SAFETY: `rk` is valid while `consumer` lives, which outlives this
        // queue (the lifetime); both handles are released in `drop`.
        let (queue, events) = unsafe {
            let queue = rd::rd_kafka_queue_new(rk);
            let events = rd::rd_kafka_queue_get_consumer(rk);
            if !events.is_null() {
                rd::rd_kafka_queue_cb_event_enable(events, Some(wake), queue.cast());
            }
            (queue, events)
        };
        if let Some(shown) = shown {
            shown.store(queue, Ordering::Release);
        }
        FetchQueue { queue, events, shown, rk, taken: Vec::with_capacity(FETCH_BATCH) }
    }

    /// Whether the consumer's own queue holds events (`poll` takes one per
    /// call). The wake-up comes only when an event arrives at an empty
    /// queue, so a wait for records with events still queued would not be
    /// cut short: each of them could cost up to the wait (the `state-1m`
    /// restart took 0.334 and 0.328 s without this check, 0.278 and 0.281 s
    /// with it).
    pub fn events_waiting(&self) -> bool {
        // SAFETY: `events` is a valid queue handle until `drop`.
        !self.events.is_null() && unsafe { rd::rd_kafka_queue_length(self.events) } > 0
    }

    /// Sends `topic`'s `partition`'s records here, from before it is assigned.
    pub fn forward(&self, topic: &str, partition: i32) {
        forward_to(self.rk, self.queue, topic, partition);
    }

    /// Takes the records at hand, waiting up to `timeout` for the first
    /// (returning early when the consumer's queue gets an event), and gives
    /// each to `each` in order. A record the queue holds as an error (a
    /// partition's fetch failed) comes as `Err`. The first error `each`
    /// returns is returned, and the records after it are dropped unseen
    /// (the host stops on it; a restart fetches them again). Returns how
    /// many records were taken.
    pub fn consume<E>(
        &mut self,
        timeout: Duration,
        mut each: impl FnMut(Result<&Fetched<'_>, KafkaError>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `taken` has room for FETCH_BATCH pointers; librdkafka
        // writes `n` of them, each a message the caller now owns.
        let n = unsafe {
            let n = rd::rd_kafka_consume_batch_queue(self.queue, ms, self.taken.as_mut_ptr(), FETCH_BATCH);
            let n = usize::try_from(n).unwrap_or(0);
            self.taken.set_len(n);
            n
        };
        let mut result = Ok(n);
        for &ptr in &self.taken {
            let msg = Fetched { ptr, _consumer: PhantomData };
            if result.is_ok() {
                // SAFETY: `ptr` is a message librdkafka returned above.
                let err = unsafe { (*ptr).err };
                let r = if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                    each(Ok(&msg))
                } else {
                    each(Err(KafkaError::MessageConsumption(err.into())))
                };
                if let Err(e) = r {
                    result = Err(e);
                }
            }
            drop(msg);
        }
        self.taken.clear();
        result
    }
}

impl Drop for FetchQueue<'_> {
    fn drop(&mut self) {
        if let Some(shown) = self.shown {
            shown.store(null_mut(), Ordering::Release);
        }
        // SAFETY: both handles were created in `new` and are released once,
        // the wake-up callback first.
        unsafe {
            if !self.events.is_null() {
                rd::rd_kafka_queue_cb_event_enable(self.events, None, null_mut());
                rd::rd_kafka_queue_destroy(self.events);
            }
            rd::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// Sends `topic`'s `partition`'s records to the fetch queue `shown` (see
/// [`FetchQueue::new`]), before the partition is assigned. A null queue (no
/// [`FetchQueue`] yet or any more) leaves them on the consumer's queue.
pub fn forward<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    shown: &AtomicPtr<rd::rd_kafka_queue_t>,
    topic: &str,
    partition: i32,
) {
    let queue = shown.load(Ordering::Acquire);
    if !queue.is_null() {
        forward_to(consumer.client().native_ptr(), queue, topic, partition);
    }
}

fn forward_to(rk: *mut rd::rd_kafka_t, queue: *mut rd::rd_kafka_queue_t, topic: &str, partition: i32) {
    let Ok(name) = CString::new(topic) else { return };
    // SAFETY: the client and `queue` are valid (their owners outlive this
    // call); the partition's handle is released at once (the forwarding
    // stays with the partition).
    unsafe {
        let partition_queue = rd::rd_kafka_queue_get_partition(rk, name.as_ptr(), partition);
        if !partition_queue.is_null() {
            rd::rd_kafka_queue_forward(partition_queue, queue);
            rd::rd_kafka_queue_destroy(partition_queue);
        }
    }
}

/// The start of librdkafka's private `rd_kafka_msg_t` (`rdkafka_msg.h` of
/// librdkafka 2.12.1, [`MSG_LAYOUT_VERSION`]), whose first field is the
/// `rd_kafka_message_t` a fetched record is, up to its unparsed headers.
#[repr(C)]
struct MsgHead {
    message: rd::rd_kafka_message_t,
    /// `rkm_link`: a `TAILQ_ENTRY`, two pointers.
    link: [*mut c_void; 2],
    flags: c_int,
    tstype: c_int,
    timestamp: i64,
    /// `rkm_headers`: the parsed headers, once parsed.
    headers: *mut c_void,
    status: c_int,
    broker_id: i32,
    /// `rkm_u.consumer.binhdrs`: the record's headers as Kafka sent them,
    /// their count (a varint) first.
    binhdrs_len: i32,
    binhdrs_data: *const u8,
}

/// The `rd_kafka_version()` whose `rd_kafka_msg_t` [`MsgHead`] copies.
/// Another version (rdkafka-sys is upgraded) parses every record's
/// headers, as before: [`tests`] fails until the layout is checked again.
const MSG_LAYOUT_VERSION: c_int = 0x020c_01ff;

/// `RD_KAFKA_MSG_F_PRODUCER` (`rdkafka_msg.h`).
const MSG_F_PRODUCER: c_int = 0x40000;

/// Whether the linked librdkafka is the one [`MsgHead`] describes.
fn layout_known() -> bool {
    static KNOWN: OnceLock<bool> = OnceLock::new();
    // SAFETY: a plain query.
    *KNOWN.get_or_init(|| unsafe { rd::rd_kafka_version() } == MSG_LAYOUT_VERSION)
}

/// A record taken from the fetch queue; destroyed on drop.
pub struct Fetched<'q> {
    ptr: *mut rd::rd_kafka_message_t,
    _consumer: PhantomData<&'q ()>,
}

impl Drop for Fetched<'_> {
    fn drop(&mut self) {
        // SAFETY: a message from `rd_kafka_consume_batch_queue`, destroyed once.
        unsafe { rd::rd_kafka_message_destroy(self.ptr) }
    }
}

impl Fetched<'_> {
    /// Whether the record came without headers, read off librdkafka's
    /// message: `rd_kafka_message_headers` allocates and zeroes a parse
    /// buffer for every record, headers or not, and that was 17.6% of the
    /// stateless map's processing thread (BENCHMARKS.md, "fourteenth"). `false` when it
    /// cannot tell (then the headers are parsed).
    fn has_no_headers(&self) -> bool {
        if !layout_known() {
            return false;
        }
        // SAFETY: a fetched record is the start of an `rd_kafka_msg_t`,
        // laid out as `MsgHead` in this librdkafka (`layout_known`); its
        // unparsed headers, when their length is positive, are that many
        // bytes it holds.
        unsafe {
            let head = &*self.ptr.cast::<MsgHead>();
            head.headers.is_null()
                && head.flags & MSG_F_PRODUCER == 0
                && (head.binhdrs_len <= 0 || *head.binhdrs_data == 0)
        }
    }

    /// The record's headers as librdkafka parses them (`None`: it finds none).
    fn parsed_headers(&self) -> Option<&FetchedHeaders> {
        let mut headers = null_mut();
        // SAFETY: a valid message; the headers it returns live as long as it.
        let err = unsafe { rd::rd_kafka_message_headers(self.ptr, &mut headers) };
        // SAFETY: `FetchedHeaders` is a zero-sized stand-in for the native
        // headers, whose address it carries (as rust-rdkafka's own does).
        (err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && !headers.is_null())
            .then(|| unsafe { &*(headers as *const FetchedHeaders) })
    }
}

/// `len` bytes at `ptr` (`None`: null).
///
/// # Safety
/// `ptr` must be null or point to `len` bytes that live as long as `'a`.
unsafe fn bytes<'a>(ptr: *const c_void, len: usize) -> Option<&'a [u8]> {
    // SAFETY: the caller's promise.
    (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

impl Message for Fetched<'_> {
    type Headers = FetchedHeaders;

    fn key(&self) -> Option<&[u8]> {
        // SAFETY: the message owns its key while it lives.
        unsafe { bytes((*self.ptr).key, (*self.ptr).key_len) }
    }

    fn payload(&self) -> Option<&[u8]> {
        // SAFETY: the message owns its payload while it lives.
        unsafe { bytes((*self.ptr).payload, (*self.ptr).len) }
    }

    unsafe fn payload_mut(&mut self) -> Option<&mut [u8]> {
        // SAFETY: the caller's promise (see `Message::payload_mut`).
        unsafe {
            let (ptr, len) = ((*self.ptr).payload, (*self.ptr).len);
            (!ptr.is_null()).then(|| std::slice::from_raw_parts_mut(ptr.cast::<u8>(), len))
        }
    }

    fn topic(&self) -> &str {
        // SAFETY: the message holds its topic, whose name lives as long.
        let name = unsafe { CStr::from_ptr(rd::rd_kafka_topic_name((*self.ptr).rkt)) };
        name.to_str().expect("Kafka topic names are ASCII")
    }

    fn partition(&self) -> i32 {
        // SAFETY: a valid message.
        unsafe { (*self.ptr).partition }
    }

    fn offset(&self) -> i64 {
        // SAFETY: a valid message.
        unsafe { (*self.ptr).offset }
    }

    fn timestamp(&self) -> Timestamp {
        let mut kind = rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: a valid message and a place for the type.
        let ms = unsafe { rd::rd_kafka_message_timestamp(self.ptr, &mut kind) };
        match kind {
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_CREATE_TIME => Timestamp::CreateTime(ms),
            rd::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_LOG_APPEND_TIME => Timestamp::LogAppendTime(ms),
            _ => Timestamp::NotAvailable,
        }
    }

    fn headers(&self) -> Option<&FetchedHeaders> {
        if self.has_no_headers() {
            return None;
        }
        self.parsed_headers()
    }
}

/// A record's headers, at the address of librdkafka's.
pub struct FetchedHeaders;

impl Headers for FetchedHeaders {
    fn count(&self) -> usize {
        // SAFETY: `self` is at the native headers' address (see `Fetched::headers`).
        unsafe { rd::rd_kafka_header_cnt((self as *const FetchedHeaders).cast()) }
    }

    fn try_get(&self, idx: usize) -> Option<Header<'_, &[u8]>> {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0);
        // SAFETY: as in `count`; the name and value live as long as the headers.
        unsafe {
            let err = rd::rd_kafka_header_get_all(
                (self as *const FetchedHeaders).cast(),
                idx,
                &mut name,
                &mut value,
                &mut size,
            );
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                return None;
            }
            Some(Header { key: CStr::from_ptr(name).to_str().unwrap_or(""), value: bytes(value, size) })
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::ClientConfig;
    use rdkafka::message::OwnedHeaders;
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    use rdkafka::{Offset, TopicPartitionList};

    use super::*;

    type Seen = Vec<(String, Option<Vec<u8>>)>;

    fn as_seen(h: &FetchedHeaders) -> Seen {
        h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec))).collect()
    }

    /// Records without headers, with an empty list of them, and with some
    /// (one with no value), through the fetch queue: `has_no_headers` says
    /// so exactly when librdkafka's parse finds none, the headers are
    /// librdkafka's, and the copied layout's timestamp is the one
    /// `rd_kafka_message_timestamp` gives (the fields before the headers
    /// are where `MsgHead` puts them).
    #[test]
    fn headers_read_off_the_message_agree_with_librdkafkas_parse() {
        // SAFETY: a plain query.
        let version = unsafe { rd::rd_kafka_version() };
        assert!(
            layout_known(),
            "librdkafka {version:#x} is not {MSG_LAYOUT_VERSION:#x}, whose rd_kafka_msg_t MsgHead copies: \
             compare rdkafka_msg.h and update MsgHead and MSG_LAYOUT_VERSION"
        );
        let cluster = MockCluster::new(1).expect("mock cluster");
        cluster.create_topic("t", 1, 1).expect("topic");
        let bootstrap = cluster.bootstrap_servers();
        let producer: BaseProducer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).create().expect("producer");
        let with = |pairs: &[(&str, Option<&[u8]>)]| {
            pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| h.insert(Header { key, value: *value }))
        };
        let sent: [Option<OwnedHeaders>; 4] = [
            None,
            Some(OwnedHeaders::new()),
            Some(with(&[("a", Some(b"1"))])),
            Some(with(&[("n", None), ("b", Some(b"")), ("c", Some(b"xyz"))])),
        ];
        for (i, headers) in sent.iter().enumerate() {
            let mut r = BaseRecord::<[u8], [u8]>::to("t").payload(b"v").timestamp(1_000 + i as i64);
            if let Some(h) = headers {
                r = r.headers(h.clone());
            }
            producer.send(r).map_err(|(e, _)| e).expect("send");
        }
        producer.flush(Duration::from_secs(10)).expect("flush");

        let consumer: BaseConsumer =
            ClientConfig::new().set("bootstrap.servers", &bootstrap).set("group.id", "g").create().expect("consumer");
        let mut fetch = FetchQueue::new(&consumer, None);
        fetch.forward("t", 0);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("t", 0, Offset::Beginning).expect("tpl");
        consumer.assign(&tpl).expect("assign");
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.len() < sent.len() && std::time::Instant::now() < deadline {
            let _ = consumer.poll(Duration::ZERO);
            fetch
                .consume(Duration::from_millis(100), |m| -> Result<(), KafkaError> {
                    let m = m?;
                    // SAFETY: a fetched record, laid out as `MsgHead` (checked above).
                    let copied = unsafe { (*m.ptr.cast::<MsgHead>()).timestamp };
                    let mine = m.headers().map(as_seen);
                    seen.push((m.has_no_headers(), m.parsed_headers().map(as_seen), mine, copied, m.timestamp()));
                    Ok(())
                })
                .expect("records");
        }
        assert_eq!(seen.len(), sent.len(), "every record within 10 s");
        for (i, (no_headers, parsed, mine, copied, timestamp)) in seen.into_iter().enumerate() {
            assert_eq!(no_headers, parsed.is_none(), "record {i}: {parsed:?}");
            assert_eq!(mine, parsed, "record {i}");
            assert_eq!(timestamp, Timestamp::CreateTime(1_000 + i as i64), "record {i}");
            assert_eq!(copied, 1_000 + i as i64, "record {i}");
        }
    }
}
