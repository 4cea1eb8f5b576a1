//! Per-key count: each record increments its key's count in host-managed
//! state (RocksDB, checkpointed with the input offset) and emits
//! `key → count`. The benchmark's "per-key count" row runs this.

use wasmstream_sdk::{Context, Processor, Record, Result};

#[derive(Default)]
pub struct Count;

impl Processor for Count {
    fn process(&mut self, record: &Record<'_>, ctx: &mut Context<'_>) -> Result<()> {
        let key = record.key.unwrap_or_default();
        let count = ctx.state().get_u64(key).unwrap_or(0) + 1;
        ctx.state().put_u64(key, count);
        ctx.emit_borrowed(Some(key), Some(count.to_string().as_bytes()));
        Ok(())
    }
}

wasmstream_sdk::export!(Count);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmstream_sdk::testing::{TestRunner, record};

    #[test]
    fn counts_per_key_and_survives_a_restart() {
        let mut t = TestRunner::<Count>::new(&[]).expect("init");
        t.process(record("a", "x")).expect("process");
        t.process(record("b", "x")).expect("process");
        t.restart().expect("restart");
        let out = t.process(record("a", "x")).expect("process");
        assert_eq!(out[0].value.as_deref(), Some(&b"2"[..]));
    }
}
