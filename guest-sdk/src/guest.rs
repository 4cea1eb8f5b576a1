//! Adapts a [`Processor`](crate::Processor) to the WIT exports. Compiled only
//! for wasm32; the `export!` macro instantiates it for the user's type.

use crate::{Config, Processor, State};

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
            Some(p) => {
                let mut outputs = Vec::with_capacity(batch.len());
                match crate::packed::process_batch(p, &mut HostState, &batch, &mut outputs) {
                    None => types::BatchOutput { outputs, failure: None },
                    Some((index, message)) => failed(outputs, index, message),
                }
            }
            None => failed(Vec::new(), 0, NOT_INITIALISED.into()),
        })
    }

    fn snapshot() -> Vec<u8> {
        T::with(|slot| slot.as_ref().map(|p| p.snapshot()).unwrap_or_default())
    }

    fn restore(snapshot: Vec<u8>, origin: types::SnapshotOrigin) -> Result<(), String> {
        let origin = crate::SnapshotOrigin { module_digest: origin.module_digest, same_module: origin.same_module };
        T::with(|slot| {
            let p = slot.as_mut().ok_or(NOT_INITIALISED)?;
            p.restore(&snapshot, &origin).map_err(|e| e.to_string())
        })
    }
}
