//! Adapts a [`Processor`](crate::Processor) to the WIT exports. Compiled only
//! for wasm32; the `export!` macro instantiates it for the user's type.

use crate::{Config, Context, Header, Output, Processor, Record, State};

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "processor",
        pub_export_macro: true,
        export_macro_name: "__export_processor",
        default_bindings_module: "wasmstream_sdk::guest::bindings",
    });
}

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

fn headers_in(headers: Vec<types::Header>) -> Vec<Header> {
    headers.into_iter().map(|h| Header { key: h.key, value: h.value }).collect()
}

fn output_out(o: Output) -> types::OutputRecord {
    types::OutputRecord {
        topic: o.topic,
        key: o.key,
        value: o.value,
        headers: o.headers.into_iter().map(|h| types::Header { key: h.key, value: h.value }).collect(),
        timestamp: o.timestamp,
    }
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

    fn process(input: types::InputRecord) -> Result<Vec<types::OutputRecord>, String> {
        T::with(|slot| {
            let p = slot.as_mut().ok_or(NOT_INITIALISED)?;
            let headers = if input.headers.is_empty() { Vec::new() } else { headers_in(input.headers) };
            let record = Record {
                topic: &input.topic,
                partition: input.partition,
                offset: input.offset,
                timestamp: input.timestamp,
                key: input.key.as_deref(),
                value: input.value.as_deref(),
                headers: &headers,
            };
            let mut outputs = Vec::new();
            p.process(&record, &mut Context::new(&mut HostState, &mut outputs)).map_err(|e| e.to_string())?;
            Ok(outputs.into_iter().map(output_out).collect())
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
