//! Word count, the wasmstream example.
//!
//! Splits each record's value into words (lower-cased, split at anything that is
//! not alphanumeric or an apostrophe), keeps one counter per word in host
//! state, and emits one `word → count` record per word occurrence, the count
//! being the running total after that occurrence. State belongs to a task (one
//! input partition), so counts are per partition; each output carries a
//! `source-partition` header saying which. Key the input by word (or sum over
//! the header) for one count per word. Its snapshot is the number of
//! records it has processed, so a restart can be checked against the input.
//!
//! Config (`[processor.config]`): `min-length` (default 1) drops shorter words.

use wasmstream_sdk::{Config, Context, Error, Output, Processor, Record, Result, SnapshotOrigin};

#[derive(Default)]
pub struct WordCount {
    /// Records processed since the first start, carried in the snapshot.
    pub processed: u64,
    min_length: usize,
}

/// The key under which the count of `word` is kept in state.
pub fn state_key(word: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + word.len());
    k.extend_from_slice(b"w/");
    k.extend_from_slice(word.as_bytes());
    k
}

/// The words of `text`, as the processor counts them.
pub fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
}

impl Processor for WordCount {
    fn init(&mut self, config: &Config) -> Result<()> {
        self.min_length = config.parse("min-length")?.unwrap_or(1);
        Ok(())
    }

    fn process(&mut self, record: &Record<'_>, ctx: &mut Context<'_>) -> Result<()> {
        let partition = record.partition.to_string();
        for word in words(record.value_str()?) {
            if word.chars().count() < self.min_length {
                continue;
            }
            let key = state_key(&word);
            let count = ctx.state().get_u64(&key).unwrap_or(0) + 1;
            ctx.state().put_u64(&key, count);
            // Counts are per task (input partition), as in Kafka Streams without a
            // repartition: the header lets a reader tell the tasks' counts apart.
            ctx.emit(Output::new(word, count.to_string()).with_header("source-partition", partition.as_bytes()));
        }
        self.processed += 1;
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        self.processed.to_be_bytes().to_vec()
    }

    fn restore(&mut self, snapshot: &[u8], _origin: &SnapshotOrigin) -> Result<()> {
        let bytes: [u8; 8] = snapshot
            .try_into()
            .map_err(|_| Error::msg(format_args!("snapshot has {} bytes, expected 8", snapshot.len())))?;
        self.processed = u64::from_be_bytes(bytes);
        Ok(())
    }
}

wasmstream_sdk::export!(WordCount);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmstream_sdk::testing::{TestRunner, record};

    fn values(out: &[Output]) -> Vec<(String, String)> {
        out.iter()
            .map(|o| {
                let s = |b: &Option<Vec<u8>>| String::from_utf8(b.clone().unwrap_or_default()).unwrap_or_default();
                (s(&o.key), s(&o.value))
            })
            .collect()
    }

    #[test]
    fn counts_words_across_records_in_state() {
        let mut t = TestRunner::<WordCount>::new(&[]).expect("init");
        let out = t.process(record("", "The cat, the HAT")).expect("process");
        assert_eq!(
            values(&out),
            [("the", "1"), ("cat", "1"), ("the", "2"), ("hat", "1")].map(|(a, b)| (a.into(), b.into()))
        );
        let out = t.process(record("", "the end")).expect("process");
        assert_eq!(values(&out)[0], ("the".into(), "3".into()));
        assert_eq!(t.processor.processed, 2);
    }

    #[test]
    fn restart_restores_processed_counter_from_snapshot() {
        let mut t = TestRunner::<WordCount>::new(&[]).expect("init");
        t.process(record("", "a b")).expect("process");
        t.restart().expect("restart");
        assert_eq!(t.processor.processed, 1);
        let out = t.process(record("", "a")).expect("process");
        assert_eq!(values(&out), [("a".to_string(), "2".to_string())]);
    }

    #[test]
    fn min_length_config_drops_short_words_and_bad_value_is_named() {
        let mut t = TestRunner::<WordCount>::new(&[("min-length", "3")]).expect("init");
        let out = t.process(record("", "a an the")).expect("process");
        assert_eq!(values(&out), [("the".to_string(), "1".to_string())]);
        let err = TestRunner::<WordCount>::new(&[("min-length", "x")]).err().expect("must fail");
        assert!(err.message().contains("min-length"), "{err}");
    }

    #[test]
    fn non_utf8_value_is_an_error_naming_the_record() {
        let mut t = TestRunner::<WordCount>::new(&[]).expect("init");
        let err = t.process(record("", vec![0xff, 0xfe])).expect_err("must fail");
        assert!(err.message().contains("input/0@0"), "{err}");
    }
}
