//! A stateless map: each record's value, ASCII upper-cased, under the same key.
//! The benchmark's "stateless WASM map" row runs this.

use wasmstream_sdk::{Context, Processor, Record, Result};

#[derive(Default)]
pub struct Uppercase;

impl Processor for Uppercase {
    fn process(&mut self, record: &Record<'_>, ctx: &mut Context<'_>) -> Result<()> {
        // Written in place into the batch's outputs: nothing is allocated.
        match record.value {
            Some(value) => ctx.emit_filled(record.key, value.len(), |out| {
                out.copy_from_slice(value);
                out.make_ascii_uppercase();
            }),
            None => ctx.emit_borrowed(record.key, None),
        }
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
        assert_eq!((out[0].topic.as_deref(), out[0].timestamp, out[0].headers.len()), (None, None, 0));
    }
}
