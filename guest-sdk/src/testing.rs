//! Run a [`Processor`] natively, with an in-memory state, in unit tests.

use crate::{Config, Context, Header, MemoryState, Output, Processor, Record, Result, SnapshotOrigin};

/// An owned input record for tests; see [`record`].
#[derive(Debug, Clone, Default)]
pub struct TestRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

/// A record on topic `input`, partition 0, with this key and value; the runner
/// numbers offsets it leaves at 0.
pub fn record(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> TestRecord {
    TestRecord { topic: "input".into(), key: Some(key.into()), value: Some(value.into()), ..Default::default() }
}

/// Drives one processor instance the way the host drives a task.
pub struct TestRunner<P: Processor> {
    pub processor: P,
    pub state: MemoryState,
    config: Config,
    next_offset: i64,
}

impl<P: Processor> TestRunner<P> {
    /// A fresh instance, `init`ialised with this config.
    pub fn new(config: &[(&str, &str)]) -> Result<Self> {
        let config = Config::new(config.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        let mut processor = P::default();
        processor.init(&config)?;
        Ok(TestRunner { processor, state: MemoryState::default(), config, next_offset: 0 })
    }

    /// Calls `process`; returns the emitted outputs. Offsets count up from 0
    /// unless the record sets one.
    pub fn process(&mut self, mut rec: TestRecord) -> Result<Vec<Output>> {
        if rec.offset == 0 {
            rec.offset = self.next_offset;
        }
        self.next_offset = rec.offset + 1;
        let view = Record {
            topic: &rec.topic,
            partition: rec.partition,
            offset: rec.offset,
            timestamp: rec.timestamp,
            key: rec.key.as_deref(),
            value: rec.value.as_deref(),
            headers: &rec.headers,
        };
        let mut packed = Vec::new();
        self.processor.process(&view, &mut Context::new(&mut self.state, &mut packed, 0))?;
        let outputs = crate::packed::read_outputs(&packed).map(|o| {
            let o = o.expect("the SDK reads back the outputs it wrote");
            Output {
                topic: o.topic.map(str::to_string),
                key: o.key.map(<[u8]>::to_vec),
                value: o.value.map(<[u8]>::to_vec),
                headers: o
                    .headers
                    .iter()
                    .map(|(k, v)| Header { key: k.to_string(), value: v.map(<[u8]>::to_vec) })
                    .collect(),
                timestamp: o.timestamp,
            }
        });
        Ok(outputs.collect())
    }

    /// What a restart from a checkpoint taken now looks like: a fresh instance,
    /// `init`, then `restore(snapshot(), same module)`, with the same state.
    pub fn restart(&mut self) -> Result<()> {
        let snapshot = self.processor.snapshot();
        let mut fresh = P::default();
        fresh.init(&self.config)?;
        fresh.restore(&snapshot, &SnapshotOrigin { module_digest: TEST_DIGEST.into(), same_module: true })?;
        self.processor = fresh;
        Ok(())
    }

    /// What a hot swap to processor `Q` at this point looks like: a fresh `Q`,
    /// `init` with the same config, then `restore(snapshot(), other module)`,
    /// with the same state. For testing a new version's migration.
    pub fn swap<Q: Processor>(self) -> Result<TestRunner<Q>> {
        let snapshot = self.processor.snapshot();
        let mut next = Q::default();
        next.init(&self.config)?;
        next.restore(&snapshot, &SnapshotOrigin { module_digest: TEST_DIGEST.into(), same_module: false })?;
        Ok(TestRunner { processor: next, state: self.state, config: self.config, next_offset: self.next_offset })
    }
}

/// The module digest [`TestRunner`] hands to `restore`.
pub const TEST_DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000000";
