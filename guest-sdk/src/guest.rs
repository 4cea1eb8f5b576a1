//! Adapts a [`Processor`](crate::Processor) to the WIT exports. Compiled only
//! for wasm32; the `export!` macro instantiates it for the user's type.

use crate::{Config, Context, Header, Output, Processor, Record, State};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "batch-processor",
        pub_export_macro: true,
        export_macro_name: "__export_processor",
        default_bindings_module: "wasmstream_sdk::guest::bindings",
    });
}

use crate::packed::{InputBatch, push_output};
use bindings::wasmstream::processor::{state as host_state, types};

/// Where the `export!` macro keeps the one processor instance of the component.
pub trait Instance {
    type Processor: Processor;
    fn with<R>(f: impl FnOnce(&mut Option<Self::Processor>) -> R) -> R;
}

/// The host's state, through the `state` import.
struct HostState;

impl State for HostState {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        host_state::get(key)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) {
        host_state::put(key, value)
    }
    fn delete(&mut self, key: &[u8]) {
        host_state::delete(key)
    }
    fn scan_prefix(&mut self, prefix: &[u8], limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        host_state::scan_prefix(prefix, limit)
    }
}

const NOT_INITIALISED: &str = "the host called the processor before init";

fn failed(outputs: Vec<u8>, index: usize, message: String) -> types::BatchOutput {
    types::BatchOutput { outputs, failure: Some(types::BatchFailure { index: index as u32, message }) }
}

/// Runs `p` over every record of the packed `batch`, packing what it emits.
fn process_batch<P: Processor>(p: &mut P, batch: &[u8]) -> types::BatchOutput {
    // Outputs are usually about the size of the inputs.
    let mut out = Vec::with_capacity(batch.len());
    let b = match InputBatch::read(batch) {
        Ok(b) => b,
        Err(e) => return failed(out, 0, e.to_string()),
    };
    let mut emitted: Vec<Output> = Vec::new();
    let mut headers: Vec<Header> = Vec::new();
    for (i, rec) in b.records().enumerate() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => return failed(out, i, e.to_string()),
        };
        headers.clear();
        headers.extend(rec.headers.iter().map(|(k, v)| Header { key: k.to_string(), value: v.map(<[u8]>::to_vec) }));
        let record = Record {
            topic: b.topic,
            partition: b.partition,
            offset: rec.offset,
            timestamp: rec.timestamp,
            key: rec.key,
            value: rec.value,
            headers: &headers,
        };
        if let Err(e) = p.process(&record, &mut Context::new(&mut HostState, &mut emitted)) {
            return failed(out, i, e.to_string());
        }
        for o in emitted.drain(..) {
            let hs = o.headers.iter().map(|h| (h.key.as_str(), h.value.as_deref()));
            let topic = o.topic.as_deref();
            push_output(
                &mut out,
                i as u32,
                topic,
                o.timestamp,
                o.key.as_deref(),
                o.value.as_deref(),
                o.headers.len() as u32,
                hs,
            );
        }
    }
    types::BatchOutput { outputs: out, failure: None }
}

impl<T: Instance> bindings::Guest for T {
    fn init(config: Vec<(String, String)>) -> Result<(), String> {
        T::with(|slot| {
            let mut p = T::Processor::default();
            p.init(&Config::new(config)).map_err(|e| e.to_string())?;
            *slot = Some(p);
            Ok(())
        })
    }

    fn process_batch(batch: Vec<u8>) -> types::BatchOutput {
        T::with(|slot| match slot.as_mut() {
            Some(p) => process_batch(p, &batch),
            None => failed(Vec::new(), 0, NOT_INITIALISED.into()),
        })
    }

    fn snapshot() -> Vec<u8> {
        T::with(|slot| slot.as_ref().map(|p| p.snapshot()).unwrap_or_default())
    }

    fn restore(snapshot: Vec<u8>) -> Result<(), String> {
        T::with(|slot| {
            let p = slot.as_mut().ok_or(NOT_INITIALISED)?;
            p.restore(&snapshot).map_err(|e| e.to_string())
        })
    }
}
