//! The conformance suite's echo processor (tests/conformance/README.md), with
//! the Rust SDK.

use wasmstream_sdk::{Context, Error, Output, Processor, Record, Result, SnapshotOrigin};

#[derive(Default)]
pub struct Echo {
    echoed: u64,
}

impl Processor for Echo {
    fn process(&mut self, record: &Record<'_>, ctx: &mut Context<'_>) -> Result<()> {
        if record.value == Some(b"fail") {
            return Err(Error::msg(format_args!("asked to fail at offset {}", record.offset)));
        }
        ctx.emit(Output {
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers: record.headers.to_vec(),
            ..Default::default()
        });
        self.echoed += 1;
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        self.echoed.to_be_bytes().to_vec()
    }

    fn restore(&mut self, snapshot: &[u8], _origin: &SnapshotOrigin) -> Result<()> {
        let bytes: [u8; 8] = snapshot
            .try_into()
            .map_err(|_| Error::msg(format_args!("snapshot has {} bytes, expected 8", snapshot.len())))?;
        self.echoed = u64::from_be_bytes(bytes);
        Ok(())
    }
}

wasmstream_sdk::export!(Echo);
