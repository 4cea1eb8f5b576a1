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
//!
//! And it drives every `state` import from records keyed `!state`: the
//! value `put k=v`, `delete k`, `get k` (an output `k` → value, none if
//! absent) or `scan p` (one output per entry under prefix `p`), so a test can
//! call them as a guest does.
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
        if input.key.as_deref() == Some(b"!state") {
            return state_op(input.value.as_deref().unwrap_or_default());
        }
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

/// One `!state` record: `put k=v`, `delete k` or `scan p`.
fn state_op(op: &[u8]) -> Result<Vec<OutputRecord>, String> {
    let op = std::str::from_utf8(op).map_err(|e| e.to_string())?;
    let output = |key: Vec<u8>, value: Vec<u8>| OutputRecord {
        topic: None,
        key: Some(key),
        value: Some(value),
        headers: Vec::new(),
        timestamp: None,
    };
    match op.split_once(' ') {
        Some(("put", entry)) => put(entry).map(|()| Vec::new()),
        Some(("delete", key)) => {
            state::delete(key.as_bytes());
            Ok(Vec::new())
        }
        Some(("get", key)) => Ok(state::get(key.as_bytes()).map(|v| output(key.into(), v)).into_iter().collect()),
        Some(("scan", prefix)) => {
            Ok(state::scan_prefix(prefix.as_bytes(), 0).into_iter().map(|(k, v)| output(k, v)).collect())
        }
        _ => Err(format!("unknown state operation {op:?}")),
    }
}

export!(Typed);
