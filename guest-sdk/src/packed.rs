//! The buffer format of the `batch-processor` world's `process-batch` export
//! (`wit/processor.wit`), shared by the host (which writes input batches and
//! reads outputs) and the SDK (which does the opposite).
//!
//! Why a buffer and not typed records: the canonical ABI copies a `list<u8>`
//! in one go but lowers a typed record field by field, with a call into the
//! guest's allocator per list. Measured with callgrind (`wasmstream-bench
//! micro`), a 16-byte key + 100-byte value record costs ~9,000 instructions
//! through `process(input-record)`, ~2,800 through typed spans over one
//! buffer, ~1,600 packed like this.
//!
//! Every integer is little-endian; a length of -1 means "none" (no key, no
//! value), a timestamp of `i64::MIN` means "none".
//!
//! ```text
//! input batch := topic-len:u32 topic partition:i32 count:u32 input*count
//! input       := offset:i64 timestamp:i64 key-len:i32 value-len:i32 header-count:u32
//!                key value header*header-count
//! outputs     := output*            (until the end of the buffer)
//! output      := input:u32 topic-len:i32 topic timestamp:i64 key-len:i32 value-len:i32
//!                header-count:u32 key value header*header-count
//! header      := key-len:u32 key value-len:i32 value
//! ```
//!
//! `input` of an output is the index in the batch of the record that produced
//! it; outputs come in input order. A topic of -1 is the first configured
//! output topic. Header keys and topics are UTF-8.
//!
//! The state's `write-many` and `batch-values` imports (the SDK's buffered
//! state) take and give buffers of the same kind:
//!
//! ```text
//! writes := write*                      (to the end of the buffer)
//! write  := key-len:u32 key value-len:i32 value   (-1: a delete)
//! values := value*                      (one per record of the batch)
//! value  := value-len:i32 value         (-1: no value; -2: not known)
//! ```

use core::fmt;

use crate::{Context, Header, Processor, Record, State};

/// A timestamp of `i64::MIN` in the buffer: none.
pub const NO_TIMESTAMP: i64 = i64::MIN;

/// A malformed buffer: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub at: usize,
    pub what: &'static str,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed batch buffer at byte {}: {}", self.at, self.what)
    }
}

impl std::error::Error for FormatError {}

// The field writers and readers below run several times per record. In a
// guest (wasm32, LTO) LLVM kept them out of line, and each call cost a call
// frame in the JIT code (`perf` with wasmtime's perf map: `put_i32` alone was
// 12% of the upper-case guest's call). Inlined, that call took 84-86 ns per
// record against 100-102 (`wasmstream-bench micro`, BENCHMARKS.md "fifteenth").
#[inline(always)]
fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

#[inline(always)]
fn put_i32(buf: &mut Vec<u8>, v: i32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

#[inline(always)]
fn put_i64(buf: &mut Vec<u8>, v: i64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

#[inline(always)]
fn len_of(f: Option<&[u8]>) -> i32 {
    // Kafka caps a record far below 2 GiB; a longer field would be a host bug.
    f.map_or(-1, |f| i32::try_from(f.len()).expect("field longer than 2 GiB"))
}

fn put_headers<'h>(buf: &mut Vec<u8>, headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>) {
    for (k, v) in headers {
        put_u32(buf, k.len() as u32);
        buf.extend_from_slice(k.as_bytes());
        put_i32(buf, len_of(v));
        buf.extend_from_slice(v.unwrap_or_default());
    }
}

/// Writes an input batch: [`InputWriter::begin`], then [`InputWriter::push`]
/// per record. The buffer is reused from batch to batch.
#[derive(Debug, Default)]
pub struct InputWriter {
    buf: Vec<u8>,
    count: u32,
    count_at: usize,
}

impl InputWriter {
    /// Starts a new batch of records from one topic partition.
    pub fn begin(&mut self, topic: &str, partition: i32) {
        self.buf.clear();
        put_u32(&mut self.buf, topic.len() as u32);
        self.buf.extend_from_slice(topic.as_bytes());
        put_i32(&mut self.buf, partition);
        self.count_at = self.buf.len();
        put_u32(&mut self.buf, 0);
        self.count = 0;
    }

    /// Appends one record; `headers` are (key, value) pairs.
    pub fn push<'h>(
        &mut self,
        offset: i64,
        timestamp: Option<i64>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        header_count: u32,
        headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>,
    ) {
        put_i64(&mut self.buf, offset);
        put_body(&mut self.buf, timestamp, key, value, header_count, headers);
        self.count += 1;
        self.buf[self.count_at..self.count_at + 4].copy_from_slice(&self.count.to_le_bytes());
    }

    /// Records in the batch.
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes in the batch.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Empties the batch (its records are dropped, not processed).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
    }
}

/// Appends one output record to `buf` (the outputs of a batch, in input order).
#[allow(clippy::too_many_arguments)]
pub fn push_output<'h>(
    buf: &mut Vec<u8>,
    input: u32,
    topic: Option<&str>,
    timestamp: Option<i64>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    header_count: u32,
    headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>,
) {
    put_u32(buf, input);
    put_i32(buf, len_of(topic.map(str::as_bytes)));
    buf.extend_from_slice(topic.unwrap_or_default().as_bytes());
    put_body(buf, timestamp, key, value, header_count, headers);
}

/// Appends one output for the default topic, with the input's timestamp and
/// no headers, whose value is `len` bytes that `fill` writes in place (they
/// start zeroed).
pub fn push_output_filled(buf: &mut Vec<u8>, input: u32, key: Option<&[u8]>, len: usize, fill: impl FnOnce(&mut [u8])) {
    // The layout of `push_output` with `put_body`, the value's bytes last
    // but for the headers (none).
    put_u32(buf, input);
    put_i32(buf, -1);
    put_i64(buf, NO_TIMESTAMP);
    put_i32(buf, len_of(key));
    put_i32(buf, i32::try_from(len).expect("field longer than 2 GiB"));
    put_u32(buf, 0);
    buf.extend_from_slice(key.unwrap_or_default());
    let start = buf.len();
    buf.resize(start + len, 0);
    fill(&mut buf[start..]);
}

/// What inputs and outputs share after their first fields: timestamp, key,
/// value, headers.
fn put_body<'h>(
    buf: &mut Vec<u8>,
    timestamp: Option<i64>,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    header_count: u32,
    headers: impl Iterator<Item = (&'h str, Option<&'h [u8]>)>,
) {
    put_i64(buf, timestamp.unwrap_or(NO_TIMESTAMP));
    put_i32(buf, len_of(key));
    put_i32(buf, len_of(value));
    put_u32(buf, header_count);
    buf.extend_from_slice(key.unwrap_or_default());
    buf.extend_from_slice(value.unwrap_or_default());
    put_headers(buf, headers);
}

/// The fields [`put_body`] writes.
type Body<'a> = (Option<i64>, Option<&'a [u8]>, Option<&'a [u8]>, HeadersRef<'a>);

fn read_body<'a>(r: &mut Reader<'a>) -> Result<Body<'a>, FormatError> {
    let ts = r.i64("timestamp")?;
    let klen = r.i32("key length")?;
    let vlen = r.i32("value length")?;
    let hcount = r.u32("header count")?;
    let key = r.optional(klen, "key")?;
    let value = r.optional(vlen, "value")?;
    let headers = headers(r, hcount)?;
    Ok(((ts != NO_TIMESTAMP).then_some(ts), key, value, headers))
}

/// A cursor over a buffer; every read checks bounds.
#[derive(Debug, Clone)]
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &'static str) -> FormatError {
        FormatError { at: self.at, what }
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FormatError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| self.err(what))?;
        let b = &self.buf[self.at..end];
        self.at = end;
        Ok(b)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FormatError> {
        let b = self.bytes(N, what)?;
        let mut a = [0; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    #[inline(always)]
    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        self.array(what).map(u32::from_le_bytes)
    }

    #[inline(always)]
    fn i32(&mut self, what: &'static str) -> Result<i32, FormatError> {
        self.array(what).map(i32::from_le_bytes)
    }

    #[inline(always)]
    fn i64(&mut self, what: &'static str) -> Result<i64, FormatError> {
        self.array(what).map(i64::from_le_bytes)
    }

    fn optional(&mut self, len: i32, what: &'static str) -> Result<Option<&'a [u8]>, FormatError> {
        match len {
            -1 => Ok(None),
            n if n >= 0 => self.bytes(n as usize, what).map(Some),
            _ => Err(self.err(what)),
        }
    }

    fn str(&mut self, n: usize, what: &'static str) -> Result<&'a str, FormatError> {
        let at = self.at;
        let b = self.bytes(n, what)?;
        core::str::from_utf8(b).map_err(|_| FormatError { at, what: "a topic or header key is not UTF-8" })
    }

    fn at_end(&self) -> bool {
        self.at >= self.buf.len()
    }
}

/// The headers of one record, read lazily from the buffer.
#[derive(Debug, Clone)]
pub struct HeadersRef<'a> {
    count: u32,
    r: Reader<'a>,
}

impl<'a> HeadersRef<'a> {
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The (key, value) pairs; the buffer was checked when the record was read.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a [u8]>)> + use<'a> {
        let mut r = self.r.clone();
        (0..self.count).map_while(move |_| read_header(&mut r).ok())
    }
}

fn read_header<'a>(r: &mut Reader<'a>) -> Result<(&'a str, Option<&'a [u8]>), FormatError> {
    let klen = r.u32("header key length")? as usize;
    let k = r.str(klen, "header key")?;
    let vlen = r.i32("header value length")?;
    Ok((k, r.optional(vlen, "header value")?))
}

/// Reads `count` headers (checking them) and returns them as a lazy view.
fn headers<'a>(r: &mut Reader<'a>, count: u32) -> Result<HeadersRef<'a>, FormatError> {
    let start = r.clone();
    for _ in 0..count {
        read_header(r)?;
    }
    Ok(HeadersRef { count, r: start })
}

/// One input record of a batch, borrowed from the buffer.
#[derive(Debug, Clone)]
pub struct InputRef<'a> {
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: HeadersRef<'a>,
}

/// An input batch: its topic partition and its records.
#[derive(Debug, Clone)]
pub struct InputBatch<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub count: u32,
    r: Reader<'a>,
}

impl<'a> InputBatch<'a> {
    pub fn read(buf: &'a [u8]) -> Result<Self, FormatError> {
        let mut r = Reader { buf, at: 0 };
        let tlen = r.u32("topic length")? as usize;
        let topic = r.str(tlen, "topic")?;
        let partition = r.i32("partition")?;
        let count = r.u32("record count")?;
        Ok(InputBatch { topic, partition, count, r })
    }

    /// The records in order; a malformed one ends the iteration with its error.
    pub fn records(&self) -> impl Iterator<Item = Result<InputRef<'a>, FormatError>> + use<'a> {
        let mut r = self.r.clone();
        (0..self.count).map(move |_| {
            let offset = r.i64("offset")?;
            let (timestamp, key, value, headers) = read_body(&mut r)?;
            Ok(InputRef { offset, timestamp, key, value, headers })
        })
    }
}

/// One output record, borrowed from the outputs buffer.
#[derive(Debug, Clone)]
pub struct OutputRef<'a> {
    pub input: u32,
    pub topic: Option<&'a str>,
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: HeadersRef<'a>,
}

/// The outputs in `buf`, in order; a malformed one ends the iteration with its error.
pub fn read_outputs(buf: &[u8]) -> impl Iterator<Item = Result<OutputRef<'_>, FormatError>> {
    let mut r = Reader { buf, at: 0 };
    let mut failed = false;
    core::iter::from_fn(move || {
        if failed || r.at_end() {
            return None;
        }
        let out = (|| {
            let input = r.u32("input index")?;
            let tlen = r.i32("topic length")?;
            let topic = match tlen {
                -1 => None,
                n if n >= 0 => Some(r.str(n as usize, "topic")?),
                _ => return Err(r.err("topic length")),
            };
            let (timestamp, key, value, headers) = read_body(&mut r)?;
            Ok(OutputRef { input, topic, timestamp, key, value, headers })
        })();
        failed = out.is_err();
        Some(out)
    })
}

/// Appends one write to `writes` (the state's `write-many` format:
/// `key-len:u32 key value-len:i32 value`, -1 a delete).
pub fn push_write(writes: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    put_u32(writes, u32::try_from(key.len()).expect("a state key of 4 GiB"));
    writes.extend_from_slice(key);
    put_i32(writes, len_of(value));
    writes.extend_from_slice(value.unwrap_or_default());
}

/// Appends a record key's value to `values` (the state's `batch-values`
/// format: `value-len:i32 value` per record of the batch, in order, -1 no
/// value, -2 not known: the guest asks with `get`).
pub fn push_batch_value(values: &mut Vec<u8>, value: Option<Option<&[u8]>>) {
    match value {
        Some(v) => {
            put_i32(values, len_of(v));
            values.extend_from_slice(v.unwrap_or_default());
        }
        None => put_i32(values, -2),
    }
}

/// Calls `f` with where each value of `values` (the `batch-values` format)
/// starts and its length (-1: no value, -2: not known), in record order;
/// stops at a malformed one, before calling `f` with it.
pub fn read_batch_values(values: &[u8], mut f: impl FnMut(usize, i32)) -> Result<(), FormatError> {
    let mut r = Reader { buf: values, at: 0 };
    while !r.at_end() {
        let len = r.i32("state value length")?;
        let start = r.at;
        match len {
            -2 | -1 => {}
            n if n >= 0 => {
                r.bytes(n as usize, "state value")?;
            }
            _ => return Err(r.err("state value length")),
        }
        f(start, len);
    }
    Ok(())
}

/// Calls `f` with each write of `writes` in order (`None`: a delete);
/// stops at a malformed one, before calling `f` with it.
pub fn read_writes<'a>(writes: &'a [u8], mut f: impl FnMut(&'a [u8], Option<&'a [u8]>)) -> Result<(), FormatError> {
    let mut r = Reader { buf: writes, at: 0 };
    while !r.at_end() {
        let klen = r.u32("state key length")? as usize;
        let key = r.bytes(klen, "state key")?;
        let vlen = r.i32("state value length")?;
        f(key, r.optional(vlen, "state value")?);
    }
    Ok(())
}

/// Runs `p` over every record of the packed `batch` with `state`, appending
/// the packed outputs to `outputs`; stops at the first record that fails and
/// returns its index and message. The component's `process-batch` export
/// (and the host's native processors, for benchmarks) is this function.
pub fn process_batch<P: Processor>(
    p: &mut P,
    state: &mut dyn State,
    batch: &[u8],
    outputs: &mut Vec<u8>,
) -> Option<(usize, String)> {
    process_batch_with(p, &mut { state }, batch, outputs, |_, _, _| {})
}

/// [`process_batch`], calling `at_record` with the state, each record's
/// index and its key before the processor gets the record.
pub(crate) fn process_batch_with<'b, P: Processor, S: State>(
    p: &mut P,
    state: &mut S,
    batch: &'b [u8],
    outputs: &mut Vec<u8>,
    mut at_record: impl FnMut(&mut S, usize, Option<&'b [u8]>),
) -> Option<(usize, String)> {
    let b = match InputBatch::read(batch) {
        Ok(b) => b,
        Err(e) => return Some((0, e.to_string())),
    };
    let mut headers: Vec<Header> = Vec::new();
    for (i, rec) in b.records().enumerate() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => return Some((i, e.to_string())),
        };
        headers.clear();
        headers.extend(rec.headers.iter().map(|(k, v)| Header { key: k.to_string(), value: v.map(<[u8]>::to_vec) }));
        let record = Record {
            topic: b.topic,
            partition: b.partition,
            offset: rec.offset,
            timestamp: rec.timestamp,
            key: rec.key,
            value: rec.value,
            headers: &headers,
        };
        at_record(state, i, rec.key);
        let before = outputs.len();
        if let Err(e) = p.process(&record, &mut Context::new(state, outputs, i as u32)) {
            // Nothing a failed record emitted is produced.
            outputs.truncate(before);
            return Some((i, e.to_string()));
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn batch_values_and_writes_round_trip() {
        let mut values = Vec::new();
        for v in [Some(Some(&b"ab"[..])), Some(None), None, Some(Some(&b""[..]))] {
            push_batch_value(&mut values, v);
        }
        let mut read = Vec::new();
        read_batch_values(&values, |start, len| read.push((start, len))).expect("well-formed");
        assert_eq!(read, vec![(4, 2), (10, -1), (14, -2), (18, 0)]);
        assert_eq!(&values[4..6], b"ab");
        let mut short = Vec::new();
        let err = read_batch_values(&values[..5], |start, len| short.push((start, len))).unwrap_err();
        assert_eq!((short.len(), err.what), (0, "state value"), "a truncated value is not read");

        let mut writes = Vec::new();
        push_write(&mut writes, b"k", Some(b"v"));
        push_write(&mut writes, b"gone", None);
        let mut read = Vec::new();
        read_writes(&writes, |k, v| read.push((k.to_vec(), v.map(<[u8]>::to_vec)))).expect("well-formed");
        assert_eq!(read, vec![(b"k".to_vec(), Some(b"v".to_vec())), (b"gone".to_vec(), None)]);
        assert!(read_writes(&writes[..writes.len() - 1], |_, _| {}).is_err());
    }

    #[test]
    fn input_batch_round_trips() {
        let mut w = InputWriter::default();
        w.begin("in", 3);
        w.push(7, Some(1000), Some(b"k"), Some(b"v1"), 0, core::iter::empty());
        let hs: [(&str, Option<&[u8]>); 2] = [("h", Some(b"x")), ("n", None)];
        w.push(8, None, None, Some(b""), 2, hs.iter().copied());
        let b = InputBatch::read(w.as_bytes()).unwrap();
        assert_eq!((b.topic, b.partition, b.count), ("in", 3, 2));
        let recs: Vec<_> = b.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(
            (recs[0].offset, recs[0].timestamp, recs[0].key, recs[0].value),
            (7, Some(1000), Some(&b"k"[..]), Some(&b"v1"[..]))
        );
        assert_eq!((recs[1].offset, recs[1].timestamp, recs[1].key, recs[1].value), (8, None, None, Some(&b""[..])));
        assert_eq!(recs[1].headers.iter().collect::<Vec<_>>(), hs.to_vec());
        // Reused: begin starts over.
        w.begin("other", 0);
        assert_eq!(InputBatch::read(w.as_bytes()).unwrap().count, 0);
    }

    /// An output filled in place is the bytes `push_output` writes for the
    /// same value.
    #[test]
    fn a_filled_output_is_a_pushed_one() {
        let (mut pushed, mut filled) = (Vec::new(), Vec::new());
        push_output(&mut pushed, 3, None, None, Some(b"k"), Some(b"VALUE"), 0, core::iter::empty());
        push_output_filled(&mut filled, 3, Some(b"k"), 5, |out| out.copy_from_slice(b"VALUE"));
        assert_eq!(filled, pushed);
        let (mut pushed, mut filled) = (Vec::new(), Vec::new());
        push_output(&mut pushed, 0, None, None, None, Some(b""), 0, core::iter::empty());
        push_output_filled(&mut filled, 0, None, 0, |_| {});
        assert_eq!(filled, pushed);
    }

    /// Outputs come in the order emitted, whichever way; a record that fails
    /// produces none of what it emitted, and the batch stops there.
    #[test]
    fn a_failed_record_produces_nothing_it_emitted() {
        #[derive(Default)]
        struct EmitThenFail;
        impl Processor for EmitThenFail {
            fn process(&mut self, r: &Record<'_>, ctx: &mut Context<'_>) -> crate::Result<()> {
                ctx.emit(crate::Output::new("owned", "1").to_topic("t").with_header("h", "x"));
                ctx.emit_borrowed(r.key, r.value);
                ctx.emit_filled(Some(b"filled"), 2, |out| out.copy_from_slice(b"ok"));
                match r.value {
                    Some(b"fail") => Err(crate::Error::msg("failed")),
                    _ => Ok(()),
                }
            }
        }
        let mut w = InputWriter::default();
        w.begin("in", 0);
        w.push(0, None, Some(b"a"), Some(b"v"), 0, core::iter::empty());
        w.push(1, None, Some(b"b"), Some(b"fail"), 0, core::iter::empty());
        w.push(2, None, Some(b"c"), Some(b"v"), 0, core::iter::empty());
        let mut outputs = Vec::new();
        let failed = process_batch(&mut EmitThenFail, &mut crate::MemoryState::default(), w.as_bytes(), &mut outputs);
        assert_eq!(failed, Some((1, "failed".to_string())));
        let outs: Vec<_> = read_outputs(&outputs).collect::<Result<_, _>>().unwrap();
        let seen: Vec<_> = outs.iter().map(|o| (o.input, o.topic, o.key, o.value, o.headers.iter().count())).collect();
        assert_eq!(
            seen,
            vec![
                (0, Some("t"), Some(&b"owned"[..]), Some(&b"1"[..]), 1),
                (0, None, Some(&b"a"[..]), Some(&b"v"[..]), 0),
                (0, None, Some(&b"filled"[..]), Some(&b"ok"[..]), 0),
            ]
        );
    }

    #[test]
    fn outputs_round_trip_and_truncation_is_an_error() {
        let mut buf = Vec::new();
        push_output(&mut buf, 0, None, None, Some(b"k"), Some(b"V"), 0, core::iter::empty());
        push_output(&mut buf, 2, Some("t2"), Some(5), None, None, 1, [("h", None)].into_iter());
        let outs: Vec<_> = read_outputs(&buf).collect::<Result<_, _>>().unwrap();
        assert_eq!(
            (outs[0].input, outs[0].topic, outs[0].key, outs[0].value),
            (0, None, Some(&b"k"[..]), Some(&b"V"[..]))
        );
        assert_eq!((outs[1].input, outs[1].topic, outs[1].timestamp), (2, Some("t2"), Some(5)));
        assert_eq!(outs[1].headers.iter().collect::<Vec<_>>(), vec![("h", None)]);
        let cut = &buf[..buf.len() - 3];
        let last = read_outputs(cut).last().unwrap();
        assert!(last.is_err(), "{last:?}");
    }
}
