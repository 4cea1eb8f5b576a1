//! The records a processor sees and emits, and its configuration.

/// A Kafka record header; Kafka allows a header without a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

/// One input record, borrowed from the host's call: reading it copies nothing.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch. Use this, not a clock: a replayed
    /// record has the same timestamp, so the processor's output is the same.
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [Header],
}

impl Record<'_> {
    /// The value as UTF-8, or an error naming the record.
    pub fn value_str(&self) -> crate::Result<&str> {
        let v = self.value.unwrap_or_default();
        core::str::from_utf8(v).map_err(|e| {
            crate::Error::msg(format_args!(
                "value of {}/{}@{} is not UTF-8: {e}",
                self.topic, self.partition, self.offset
            ))
        })
    }

    /// The first header with this key.
    pub fn header(&self, key: &str) -> Option<&Header> {
        self.headers.iter().find(|h| h.key == key)
    }
}

/// One record for the host to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// One of the configured output topics; `None` is the first one.
    pub topic: Option<String>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
    /// `None` keeps the input record's timestamp.
    pub timestamp: Option<i64>,
}

impl Output {
    /// A record with this key and value for the default output topic.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Output { key: Some(key.into()), value: Some(value.into()), ..Default::default() }
    }

    /// Sends the record to `topic` (one of `processor.outputs`) instead.
    pub fn to_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(Header { key: key.into(), value: Some(value.into()) });
        self
    }
}

/// The `[processor.config]` table of the host's configuration, as strings.
#[derive(Debug, Clone, Default)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    pub fn new(entries: Vec<(String, String)>) -> Self {
        Config { entries }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of `key` parsed as `T`; an error names the key and the value.
    pub fn parse<T: core::str::FromStr>(&self, key: &str) -> crate::Result<Option<T>>
    where
        T::Err: core::fmt::Display,
    {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|e| crate::Error::msg(format_args!("processor config `{key}` = {v:?}: {e}"))),
        }
    }

    /// Every entry, in the order the host passed them.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }
}
