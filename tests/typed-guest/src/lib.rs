//! The upper-case map against the typed `wasmstream:processor/processor`
//! world, with no SDK: one `process` call per record, the way a guest in a
//! language without the SDK's batch support is written. The tests run it
//! beside the SDK's `uppercase` (the `batch-processor` world) and expect the
//! same outputs.
//!
//! It also writes state outside any record, as a guest against the raw WIT
//! may: `[processor.config] init-put = "key=value"` puts that entry in
//! `init`, and `migrate-put = "key=value"` puts it in `restore` when the
//! snapshot came from another module (a migration).
#![cfg(target_arch = "wasm32")]

use std::cell::RefCell;

wit_bindgen::generate!({ path: "../../wit", world: "processor" });

use wasmstream::processor::state;

thread_local! {
    static MIGRATE_PUT: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn put(entry: &str) -> Result<(), String> {
    let (key, value) = entry.split_once('=').ok_or_else(|| format!("{entry:?} is not key=value"))?;
    state::put(key.as_bytes(), value.as_bytes());
    Ok(())
}

struct Typed;

impl Guest for Typed {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        for (key, value) in config {
            match key.as_str() {
                "init-put" => put(&value)?,
                "migrate-put" => MIGRATE_PUT.with(|m| *m.borrow_mut() = Some(value)),
                _ => {}
            }
        }
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

    fn restore(_snapshot: Vec<u8>, origin: SnapshotOrigin) -> Result<(), String> {
        match MIGRATE_PUT.with(|m| m.borrow().clone()) {
            Some(entry) if !origin.same_module => put(&entry),
            _ => Ok(()),
        }
    }
}

export!(Typed);
