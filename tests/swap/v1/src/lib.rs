//! Hot-swap fixture, version 1: counts the records of its partition (in its
//! snapshot, 8 bytes little-endian) and the records per first word of the
//! value (in state), and emits `v1 <partition>@<offset> n=<records> k=<word count>`.

use wasmstream_sdk::{Context, Error, Output, Processor, Record, Result, SnapshotOrigin};

#[derive(Default)]
pub struct V1 {
    records: u64,
}

/// The state key of a record: the first word of its value.
pub fn word<'a>(record: &Record<'a>) -> &'a [u8] {
    let value = record.value.unwrap_or_default();
    value.split(|b| *b == b' ').next().unwrap_or_default()
}

impl Processor for V1 {
    fn process(&mut self, record: &Record<'_>, ctx: &mut Context<'_>) -> Result<()> {
        self.records += 1;
        let word = word(record);
        let k = ctx.state().get_u64(word).unwrap_or(0) + 1;
        ctx.state().put_u64(word, k);
        let value = format!("v1 {}@{} n={} k={k}", record.partition, record.offset, self.records);
        ctx.emit(Output::new(record.key.unwrap_or_default(), value));
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        self.records.to_le_bytes().to_vec()
    }

    fn restore(&mut self, snapshot: &[u8], _origin: &SnapshotOrigin) -> Result<()> {
        let bytes: [u8; 8] = snapshot
            .try_into()
            .map_err(|_| Error::msg(format_args!("v1 reads an 8-byte snapshot, not {} bytes", snapshot.len())))?;
        self.records = u64::from_le_bytes(bytes);
        Ok(())
    }
}

wasmstream_sdk::export!(V1);
