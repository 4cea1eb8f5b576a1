//! The processor component: engine, linker, bindings, limits, and one instance
//! per task.
//!
//! Owns everything wasmtime. [`Module`] compiles and type-checks a component
//! against the `wasmstream:processor` world once (off the hot path) and keeps a
//! `ProcessorPre`, so a task's [`Instance`] is a cheap instantiation. The guest
//! reaches the host only through the `state` and `log` imports and a WASI
//! context with no files, no environment and no network. A guest error (`Err`
//! from an export) and a trap are told apart; a trap poisons the instance.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config as EngineConfig, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::state::{StateError, TaskStore};

mod bindings {
    wasmtime::component::bindgen!({
        world: "processor",
        path: "../wit",
        imports: { "wasmstream:processor/state": trappable },
    });
}

pub use bindings::wasmstream::processor::types::{Header, InputRecord, OutputRecord};
use bindings::wasmstream::processor::{log, state};
use bindings::{Processor, ProcessorPre};

/// The WIT world a module must implement, for messages.
pub const WORLD: &str = "wasmstream:processor/processor@0.1.0";

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot read module {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Compile { path: PathBuf, message: String },
    #[error("{path} does not implement the {WORLD} world: {message}")]
    World { path: PathBuf, message: String },
    #[error("instantiating the processor failed: {0}")]
    Instantiate(String),
    /// The guest returned `Err` from an export: the instance stays usable.
    #[error("{export} returned an error: {message}")]
    Guest { export: &'static str, message: String },
    /// The guest trapped (or a host import failed): the instance is poisoned.
    #[error("{export} trapped: {message}")]
    Trap { export: &'static str, message: String },
}

impl GuestError {
    /// Whether the instance can still be used after this error.
    pub fn poisons_instance(&self) -> bool {
        !matches!(self, GuestError::Guest { .. })
    }
}

/// A wasmtime error with its causes, on one line.
fn describe(e: &wasmtime::Error) -> String {
    let mut s = String::new();
    for (i, cause) in e.chain().enumerate() {
        if i > 0 {
            s.push_str(": ");
        }
        s.push_str(cause.to_string().lines().next().unwrap_or_default());
    }
    s
}

/// Per-instance host state: the task's store and the WASI context. The bindgen
/// host traits are implemented on it.
pub struct TaskData {
    pub store: TaskStore,
    label: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for TaskData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

fn state_trap(e: StateError) -> wasmtime::Error {
    wasmtime::Error::msg(e.to_string())
}

impl state::Host for TaskData {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.store.get(&key).map_err(state_trap)
    }
    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.store.put(key, value).map_err(state_trap)
    }
    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.store.delete(key).map_err(state_trap)
    }
    fn scan_prefix(&mut self, prefix: Vec<u8>, limit: u32) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.store.scan_prefix(&prefix, limit).map_err(state_trap)
    }
}

impl log::Host for TaskData {
    fn log(&mut self, level: log::Level, message: String) {
        let task = &*self.label;
        match level {
            log::Level::Trace => tracing::trace!(target: "guest", task, "{message}"),
            log::Level::Debug => tracing::debug!(target: "guest", task, "{message}"),
            log::Level::Info => tracing::info!(target: "guest", task, "{message}"),
            log::Level::Warn => tracing::warn!(target: "guest", task, "{message}"),
            log::Level::Error => tracing::error!(target: "guest", task, "{message}"),
        }
    }
}

impl bindings::wasmstream::processor::types::Host for TaskData {}

/// A compiled, type-checked processor component, ready to instantiate.
#[derive(Clone)]
pub struct Module {
    engine: Engine,
    pre: ProcessorPre<TaskData>,
    /// SHA-256 of the component file, hex.
    pub digest: String,
    pub path: PathBuf,
    max_memory_bytes: usize,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module").field("path", &self.path).field("digest", &self.digest).finish()
    }
}

/// The engine every module of a host shares.
pub fn engine() -> Result<Engine, GuestError> {
    let mut cfg = EngineConfig::new();
    cfg.wasm_component_model(true);
    Engine::new(&cfg).map_err(|e| GuestError::Engine(describe(&e)))
}

impl Module {
    /// Reads, compiles and links the component at `path`.
    pub fn load(engine: &Engine, path: &Path, max_memory_bytes: u64) -> Result<Module, GuestError> {
        let bytes = std::fs::read(path).map_err(|source| GuestError::Read { path: path.to_path_buf(), source })?;
        let digest = hex(&Sha256::digest(&bytes));
        let component = Component::from_binary(engine, &bytes)
            .map_err(|e| GuestError::Compile { path: path.to_path_buf(), message: describe(&e) })?;
        let mut linker = Linker::<TaskData>::new(engine);
        let world = |e: wasmtime::Error| GuestError::World { path: path.to_path_buf(), message: describe(&e) };
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| GuestError::Engine(describe(&e)))?;
        Processor::add_to_linker::<_, HasSelf<_>>(&mut linker, |d| d).map_err(|e| GuestError::Engine(describe(&e)))?;
        let pre = linker.instantiate_pre(&component).map_err(world)?;
        let pre = ProcessorPre::new(pre).map_err(world)?;
        Ok(Module {
            engine: engine.clone(),
            pre,
            digest,
            path: path.to_path_buf(),
            max_memory_bytes: usize::try_from(max_memory_bytes).unwrap_or(usize::MAX),
        })
    }

    /// A fresh instance owning `store`, with `init(config)` called.
    pub fn instantiate(
        &self,
        store: TaskStore,
        label: Arc<str>,
        config: &[(String, String)],
    ) -> Result<Instance, GuestError> {
        // No preopened directories, no environment, no arguments, no sockets:
        // a processor sees only what the host hands it. Its stderr (panic
        // messages) goes to the host's, to be seen.
        let wasi = WasiCtx::builder().inherit_stderr().allow_tcp(false).allow_udp(false).build();
        let data = TaskData {
            store,
            label,
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(self.max_memory_bytes).instances(8).build(),
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|d| &mut d.limits);
        let bindings = self.pre.instantiate(&mut store).map_err(|e| GuestError::Instantiate(describe(&e)))?;
        let mut instance = Instance { store, bindings };
        instance.init(config)?;
        Ok(instance)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One processor instance, owned by one task.
pub struct Instance {
    store: Store<TaskData>,
    bindings: Processor,
}

/// Splits an export's outcome into the two failure kinds.
fn outcome<T>(export: &'static str, r: wasmtime::Result<Result<T, String>>) -> Result<T, GuestError> {
    match r {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(message)) => Err(GuestError::Guest { export, message }),
        Err(e) => Err(GuestError::Trap { export, message: describe(&e) }),
    }
}

impl Instance {
    fn init(&mut self, config: &[(String, String)]) -> Result<(), GuestError> {
        let r = self.bindings.call_init(&mut self.store, &config.to_vec());
        outcome("init", r)
    }

    pub fn process(&mut self, record: &InputRecord) -> Result<Vec<OutputRecord>, GuestError> {
        let r = self.bindings.call_process(&mut self.store, record);
        outcome("process", r)
    }

    pub fn snapshot(&mut self) -> Result<Vec<u8>, GuestError> {
        let r = self.bindings.call_snapshot(&mut self.store).map(Ok);
        outcome("snapshot", r)
    }

    pub fn restore(&mut self, snapshot: &[u8]) -> Result<(), GuestError> {
        let r = self.bindings.call_restore(&mut self.store, snapshot);
        outcome("restore", r)
    }

    /// The task's state store.
    pub fn store(&mut self) -> &mut TaskStore {
        &mut self.store.data_mut().store
    }

    /// Gives the task's state store back (the instance is dropped).
    pub fn into_store(self) -> TaskStore {
        self.store.into_data().store
    }
}
