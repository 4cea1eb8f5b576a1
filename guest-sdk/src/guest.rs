//! Adapts a [`Processor`](crate::Processor) to the WIT exports. Compiled only
//! for wasm32; the `export!` macro instantiates it for the user's type.

use crate::state::{Buffered, Host, Provided, WriteBuffer};
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

impl Host for HostState {
    fn write_many(&mut self, writes: &[u8]) {
        host_state::write_many(writes)
    }
    fn batch_values(&mut self, batch: &[u8]) -> Vec<u8> {
        host_state::batch_values(batch)
    }
}

std::thread_local! {
    /// A batch's writes until it ends, and the values of its record keys
    /// (their memory kept from batch to batch).
    static BATCH: core::cell::RefCell<(WriteBuffer, Provided)> = core::cell::RefCell::default();
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
                // The batch's writes go to the host in one call at its end,
                // a failed record's too (as one `put` each would have).
                let failure = BATCH.with(|b| {
                    let (buffer, provided) = &mut *b.borrow_mut();
                    let mut state = Buffered::new(HostState, buffer, provided, &batch);
                    let failure =
                        crate::packed::process_batch_with(p, &mut state, &batch, &mut outputs, |s, i, key| {
                            s.at_record(i, key)
                        });
                    state.flush();
                    failure
                });
                match failure {
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
