//! Hot-swap fixture, version 2: what version 1 does, with a new output format
//! (`v2 <partition>@<offset> n=<records> k=<word count>`) and a new snapshot
//! format (`v2:` then the count as 8 bytes big-endian); `restore` migrates
//! version 1's snapshot when it comes from another module. For the rollback
//! tests, a feature builds a version 2 that fails: `fail-init`,
//! `fail-restore` (errors) or `fail-first-record` (a trap: it panics in
//! `process`); `scripts/build-guests` builds each as its own component.

use wasmstream_sdk::{Context, Error, Output, Processor, Record, Result, SnapshotOrigin};

#[derive(Default)]
pub struct V2 {
    records: u64,
}

const TAG: &[u8] = b"v2:";

impl Processor for V2 {
    fn init(&mut self, _config: &wasmstream_sdk::Config) -> Result<()> {
        if cfg!(feature = "fail-init") {
            return Err(Error::msg("v2 refuses to start (built with fail-init)"));
        }
        Ok(())
    }

    fn process(&mut self, record: &Record<'_>, ctx: &mut Context<'_>) -> Result<()> {
        if cfg!(feature = "fail-first-record") {
            panic!("v2 traps on its first record (built with fail-first-record)");
        }
        self.records += 1;
        let value = record.value.unwrap_or_default();
        let word = value.split(|b| *b == b' ').next().unwrap_or_default();
        let k = ctx.state().get_u64(word).unwrap_or(0) + 1;
        ctx.state().put_u64(word, k);
        let value = format!("v2 {}@{} n={} k={k}", record.partition, record.offset, self.records);
        ctx.emit(Output::new(record.key.unwrap_or_default(), value));
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        [TAG, &self.records.to_be_bytes()].concat()
    }

    fn restore(&mut self, snapshot: &[u8], origin: &SnapshotOrigin) -> Result<()> {
        if cfg!(feature = "fail-restore") {
            return Err(Error::msg("v2 cannot read this snapshot (built with fail-restore)"));
        }
        let count = match snapshot.strip_prefix(TAG) {
            Some(rest) => rest.try_into().map(u64::from_be_bytes).ok(),
            // Version 1's format, which only another module can have written.
            None if !origin.same_module => snapshot.try_into().map(u64::from_le_bytes).ok(),
            None => None,
        };
        self.records = count.ok_or_else(|| {
            Error::msg(format_args!(
                "cannot read a {}-byte snapshot written by {} module {}",
                snapshot.len(),
                if origin.same_module { "this" } else { "the previous" },
                origin.module_digest
            ))
        })?;
        Ok(())
    }
}

wasmstream_sdk::export!(V2);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmstream_sdk::testing::{TestRunner, record};

    #[test]
    fn a_swap_from_v1_carries_the_count_over_and_a_restart_keeps_it() {
        let mut t = TestRunner::<swap_v1_like::V1>::new(&[]).expect("init");
        t.process(record("a", "x y")).expect("process");
        t.process(record("b", "x z")).expect("process");
        let mut t = t.swap::<V2>().expect("swap");
        let out = t.process(record("c", "x")).expect("process");
        assert_eq!(out[0].value.as_deref(), Some(&b"v2 0@2 n=3 k=3"[..]));
        t.restart().expect("restart");
        let out = t.process(record("d", "y")).expect("process");
        assert_eq!(out[0].value.as_deref(), Some(&b"v2 0@3 n=4 k=1"[..]));
    }

    /// Version 1's snapshot format, without depending on its crate.
    mod swap_v1_like {
        use wasmstream_sdk::{Context, Processor, Record, Result};
        #[derive(Default)]
        pub struct V1 {
            records: u64,
        }
        impl Processor for V1 {
            fn process(&mut self, record: &Record<'_>, ctx: &mut Context<'_>) -> Result<()> {
                self.records += 1;
                let word = record.value.unwrap_or_default().split(|b| *b == b' ').next().unwrap_or_default();
                let k = ctx.state().get_u64(word).unwrap_or(0) + 1;
                ctx.state().put_u64(word, k);
                Ok(())
            }
            fn snapshot(&self) -> Vec<u8> {
                self.records.to_le_bytes().to_vec()
            }
        }
    }
}
