//! The upper-case map against the typed `wasmstream:processor/processor`
//! world, with no SDK: one `process` call per record, the way a guest in a
//! language without the SDK's batch support is written. The tests run it
//! beside the SDK's `uppercase` (the `batch-processor` world) and expect the
//! same outputs.
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "../../wit", world: "processor" });

struct Typed;

impl Guest for Typed {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn process(input: InputRecord) -> Result<Vec<OutputRecord>, String> {
        Ok(vec![OutputRecord {
            topic: None,
            key: input.key,
            value: input.value.map(|v| v.to_ascii_uppercase()),
            headers: input.headers,
            timestamp: None,
        }])
    }

    fn snapshot() -> Vec<u8> {
        Vec::new()
    }

    fn restore(_snapshot: Vec<u8>, _origin: SnapshotOrigin) -> Result<(), String> {
        Ok(())
    }
}

export!(Typed);
