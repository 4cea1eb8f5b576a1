//! A stateless map: each record's value, ASCII upper-cased, under the same key.
//! The benchmark's "stateless WASM map" row runs this.

use wasmstream_sdk::{Context, Output, Processor, Record, Result};

#[derive(Default)]
pub struct Uppercase;

/// The logic itself, shared with the benchmark's native baseline.
pub fn upper(value: &[u8]) -> Vec<u8> {
    value.to_ascii_uppercase()
}

impl Processor for Uppercase {
    fn process(&mut self, record: &Record<'_>, ctx: &mut Context<'_>) -> Result<()> {
        ctx.emit(Output { key: record.key.map(<[u8]>::to_vec), value: record.value.map(upper), ..Default::default() });
        Ok(())
    }
}

wasmstream_sdk::export!(Uppercase);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmstream_sdk::testing::{TestRunner, record};

    #[test]
    fn upper_cases_value_and_keeps_key() {
        let mut t = TestRunner::<Uppercase>::new(&[]).expect("init");
        let out = t.process(record("k", "Hello, wörld")).expect("process");
        assert_eq!(out[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out[0].value.as_deref(), Some("HELLO, WöRLD".as_bytes()));
    }
}
