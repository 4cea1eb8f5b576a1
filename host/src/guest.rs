//! The processor component: engine, linker, bindings, limits, and one instance
//! per task.
//!
//! Owns everything wasmtime. [`Module`] compiles and type-checks a component
//! against one of the two `wasmstream:processor` worlds once (off the hot
//! path) and keeps its `InstancePre`, so a task's [`Instance`] is a cheap
//! instantiation. The host hands records to an instance in packed batches
//! ([`wasmstream_sdk::packed`]): a `batch-processor` gets the buffer as is, a
//! `processor` (one typed call per record) gets its records one by one. The guest
//! reaches the host only through the `state` and `log` imports and a WASI
//! context with no files, no environment and no network. A guest error (`Err`
//! from an export) and a trap are told apart; a trap poisons the instance.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable, WasmList};
use wasmtime::{Config as EngineConfig, Engine, Store, StoreContextMut, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::compiled::{CompileCache, Origin};
use crate::state::{StateError, TaskStore};

mod bindings {
    wasmtime::component::bindgen!({
        world: "processor",
        path: "../wit",
        imports: { "wasmstream:processor/state": trappable },
    });
}

mod batch_bindings {
    wasmtime::component::bindgen!({
        world: "batch-processor",
        path: "../wit",
        with: {
            "wasmstream:processor/types": super::bindings::wasmstream::processor::types,
            "wasmstream:processor/state": super::bindings::wasmstream::processor::state,
            "wasmstream:processor/log": super::bindings::wasmstream::processor::log,
        },
    });
}

use batch_bindings::{BatchProcessor, BatchProcessorPre};
use bindings::wasmstream::processor::log;
pub use bindings::wasmstream::processor::types::{Header, InputRecord, OutputRecord, SnapshotOrigin};
use bindings::{Processor, ProcessorPre};
use wasmstream_sdk::packed::{self, FormatError, InputBatch};

/// Core module instances one processor instance may create. A Rust component
/// has a few; one built by componentize-py has more than 8 (CPython, libc,
/// the WASI adapter and their shims each instantiate a module).
const MAX_CORE_INSTANCES: usize = 64;

/// The WIT worlds a module may implement, for messages.
pub const BATCH_WORLD: &str = "wasmstream:processor/batch-processor@0.2.0";
pub const RECORD_WORLD: &str = "wasmstream:processor/processor@0.2.0";

#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot read module {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Compile { path: PathBuf, message: String },
    #[error("{path} implements neither the {BATCH_WORLD} nor the {RECORD_WORLD} world: {message}")]
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
    /// A `put`'s key and value or a `delete`'s key, copied out of guest
    /// memory (see [`with_copied`]).
    scratch: Vec<u8>,
}

impl WasiView for TaskData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

fn state_trap(e: StateError) -> wasmtime::Error {
    wasmtime::Error::msg(e.to_string())
}

/// The `state` interface, written out instead of bindgen's: bindgen's host
/// functions take every `list<u8>` as a new `Vec` (an allocation, a copy and
/// a free per key and value, three per get + put). `get` and `scan-prefix`
/// (and `batch-values`) read the key in guest memory (`WasmList`); `put`,
/// `delete` and `write-many`, which need the store mutably, copy theirs into
/// one reused buffer ([`with_copied`]).
fn add_state(linker: &mut Linker<TaskData>) -> wasmtime::Result<()> {
    let mut state = linker.instance("wasmstream:processor/state@0.2.0")?;
    state.func_wrap("get", |cx: StoreContextMut<'_, TaskData>, (key,): (WasmList<u8>,)| {
        let value = cx.data().store.get(key.as_le_slice(&cx)).map_err(state_trap)?;
        Ok((value,))
    })?;
    state.func_wrap("put", |mut cx: StoreContextMut<'_, TaskData>, (key, value): (WasmList<u8>, WasmList<u8>)| {
        with_copied(&mut cx, &[&key, &value], |store, b| store.put(&b[..key.len()], &b[key.len()..]))
            .map_err(state_trap)
    })?;
    state.func_wrap("delete", |mut cx: StoreContextMut<'_, TaskData>, (key,): (WasmList<u8>,)| {
        with_copied(&mut cx, &[&key], |store, b| store.delete(b)).map_err(state_trap)
    })?;
    state.func_wrap("write-many", |mut cx: StoreContextMut<'_, TaskData>, (writes,): (WasmList<u8>,)| {
        with_copied(&mut cx, &[&writes], |store, b| {
            // A malformed buffer is reported by the pass below.
            let mut hashes = Vec::new();
            let _ = packed::read_writes(b, |key, _| hashes.push(store.hint(key)));
            let mut hashes = hashes.into_iter();
            let mut result = Ok(());
            packed::read_writes(b, |key, value| {
                let hash = hashes.next().unwrap_or_else(|| store.hint(key));
                if result.is_ok() {
                    result = store.write_hashed(hash, key, value);
                }
            })
            .map_err(|e| wasmtime::Error::msg(format!("state.write-many: {e}")))?;
            result.map_err(state_trap)
        })
    })?;
    state.func_wrap("batch-values", |cx: StoreContextMut<'_, TaskData>, (batch,): (WasmList<u8>,)| {
        let (batch, store) = (batch.as_le_slice(&cx), &cx.data().store);
        let malformed = |e: FormatError| wasmtime::Error::msg(format!("state.batch-values: {e}"));
        let mut values = Vec::with_capacity(batch.len() / 4);
        let input = InputBatch::read(batch).map_err(malformed)?;
        let hashes: Vec<u64> =
            input.records().map_while(Result::ok).map(|r| r.key.map_or(0, |k| store.hint(k))).collect();
        for (record, i) in input.records().zip(0..) {
            let key = record.map_err(malformed)?.key;
            let known =
                key.and_then(|k| store.known_hashed(hashes.get(i).copied().unwrap_or_else(|| store.hint(k)), k));
            packed::push_batch_value(&mut values, known);
        }
        Ok((values,))
    })?;
    state.func_wrap("scan-prefix", |cx: StoreContextMut<'_, TaskData>, (prefix, limit): (WasmList<u8>, u32)| {
        let entries = cx.data().store.scan_prefix(prefix.as_le_slice(&cx), limit).map_err(state_trap)?;
        Ok((entries,))
    })?;
    Ok(())
}

/// Calls `f` with the task's store and `lists` copied end to end out of guest
/// memory into the instance's reused buffer (guest memory and the store are
/// both in the wasmtime store, which `f` needs mutably).
fn with_copied<R>(
    cx: &mut StoreContextMut<'_, TaskData>,
    lists: &[&WasmList<u8>],
    f: impl FnOnce(&mut TaskStore, &[u8]) -> R,
) -> R {
    let mut scratch = std::mem::take(&mut cx.data_mut().scratch);
    scratch.clear();
    for list in lists {
        scratch.extend_from_slice(list.as_le_slice(&*cx));
    }
    let data = cx.data_mut();
    let r = f(&mut data.store, &scratch);
    data.scratch = scratch;
    r
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
    pre: Pre,
    /// SHA-256 of the component file, hex.
    pub digest: String,
    pub path: PathBuf,
    /// Compiled now or read from a compile cache.
    pub origin: Origin,
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
    /// The engine it was compiled for (a module to swap in must share it).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The WIT world the component implements.
    pub fn world(&self) -> &'static str {
        match self.pre {
            Pre::Batch(_) => BATCH_WORLD,
            Pre::Record(_) => RECORD_WORLD,
            Pre::Native(_) => "none (compiled into the host)",
        }
    }

    /// A processor compiled into the host, named `name` (its digest is
    /// `native:<name>`): for the benchmark's WASM-vs-native comparison.
    pub fn native<P: wasmstream_sdk::Processor + Send>(engine: &Engine, name: &str) -> Module {
        Module {
            engine: engine.clone(),
            pre: Pre::Native(Arc::new(|| Box::new(P::default()) as Box<dyn NativeProcessor>)),
            digest: format!("native:{name}"),
            path: PathBuf::from(name),
            origin: Origin::CompiledUncached("compiled into the host".into()),
            max_memory_bytes: usize::MAX,
        }
    }

    /// Reads, compiles and links the component at `path`; with `cache`, a
    /// component compiled before is read from there instead of compiled.
    pub fn load(
        engine: &Engine,
        path: &Path,
        max_memory_bytes: u64,
        cache: Option<&CompileCache>,
    ) -> Result<Module, GuestError> {
        let bytes = std::fs::read(path).map_err(|source| GuestError::Read { path: path.to_path_buf(), source })?;
        Module::from_bytes(engine, path, &bytes, max_memory_bytes, cache)
    }

    /// [`Module::load`] of bytes read already from `path` (named in messages).
    pub fn from_bytes(
        engine: &Engine,
        path: &Path,
        bytes: &[u8],
        max_memory_bytes: u64,
        cache: Option<&CompileCache>,
    ) -> Result<Module, GuestError> {
        let digest = digest(bytes);
        let cached = cache.and_then(|c| c.load(engine, &digest));
        let fresh = cached.is_none();
        let component = match cached {
            Some(c) => c,
            None => Component::from_binary(engine, bytes)
                .map_err(|e| GuestError::Compile { path: path.to_path_buf(), message: describe(&e) })?,
        };
        let mut linker = Linker::<TaskData>::new(engine);
        let world = |e: wasmtime::Error| GuestError::World { path: path.to_path_buf(), message: describe(&e) };
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| GuestError::Engine(describe(&e)))?;
        log::add_to_linker::<_, HasSelf<_>>(&mut linker, |d| d).map_err(|e| GuestError::Engine(describe(&e)))?;
        add_state(&mut linker).map_err(|e| GuestError::Engine(describe(&e)))?;
        let pre = linker.instantiate_pre(&component).map_err(world)?;
        let pre = match BatchProcessorPre::new(pre.clone()) {
            Ok(batch) => Pre::Batch(batch),
            Err(batch_err) => match ProcessorPre::new(pre) {
                Ok(record) => Pre::Record(record),
                Err(record_err) => {
                    return Err(GuestError::World {
                        path: path.to_path_buf(),
                        message: format!(
                            "as a batch-processor: {}; as a processor: {}",
                            describe(&batch_err),
                            describe(&record_err)
                        ),
                    });
                }
            },
        };
        // Only a component the host accepts is kept.
        let origin = match (cache, fresh) {
            (_, false) => Origin::Cached,
            (None, true) => Origin::CompiledUncached("no compile cache".into()),
            (Some(cache), true) => match cache.store(engine, &digest, &component) {
                Ok(()) => Origin::Compiled,
                Err(why) => Origin::CompiledUncached(why),
            },
        };
        Ok(Module {
            engine: engine.clone(),
            pre,
            digest,
            path: path.to_path_buf(),
            origin,
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
        self.try_instantiate(store, label, config).map_err(|b| b.0)
    }

    /// [`Module::instantiate`], giving `store` back if instantiation or
    /// `init` fails (a hot swap goes back to the old module with it).
    pub fn try_instantiate(
        &self,
        store: TaskStore,
        label: Arc<str>,
        config: &[(String, String)],
    ) -> Result<Instance, Box<(GuestError, TaskStore)>> {
        // No preopened directories, no environment, no arguments, no sockets:
        // a processor sees only what the host hands it. Its stderr (panic
        // messages) goes to the host's, to be seen.
        let wasi = WasiCtx::builder().inherit_stderr().allow_tcp(false).allow_udp(false).build();
        let data = TaskData {
            store,
            label,
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(self.max_memory_bytes).instances(MAX_CORE_INSTANCES).build(),
            scratch: Vec::new(),
        };
        let mut store = Store::new(&self.engine, data);
        store.limiter(|d| &mut d.limits);
        let bindings = match &self.pre {
            Pre::Batch(pre) => pre.instantiate(&mut store).map(Bindings::Batch),
            Pre::Record(pre) => pre.instantiate(&mut store).map(|b| Bindings::Record(b, Box::default())),
            Pre::Native(make) => Ok(Bindings::Native(make())),
        };
        let bindings = match bindings {
            Ok(b) => b,
            Err(e) => return Err(Box::new((GuestError::Instantiate(describe(&e)), store.into_data().store))),
        };
        let mut instance = Instance { store, bindings };
        match instance.init(config) {
            Ok(()) => Ok(instance),
            Err(e) => Err(Box::new((e, instance.into_store()))),
        }
    }
}

/// SHA-256 of a module's bytes, lowercase hex: how a module is named.
pub fn digest(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The world a module implements, ready to instantiate.
#[derive(Clone)]
enum Pre {
    Batch(BatchProcessorPre<TaskData>),
    Record(ProcessorPre<TaskData>),
    Native(Arc<dyn Fn() -> Box<dyn NativeProcessor> + Send + Sync>),
}

/// A processor compiled into the host instead of a component: the same
/// logic, the same batch loop (the SDK's), no WebAssembly. Only for the
/// benchmark's WASM-vs-native row; implemented for every SDK [`Processor`](wasmstream_sdk::Processor).
pub trait NativeProcessor: Send {
    fn init(&mut self, config: &[(String, String)]) -> Result<(), String>;
    fn process_batch(
        &mut self,
        state: &mut TaskStore,
        batch: &[u8],
        outputs: &mut Vec<u8>,
    ) -> Result<Option<(usize, String)>, StateError>;
    fn snapshot(&self) -> Vec<u8>;
    fn restore(&mut self, snapshot: &[u8], origin: &SnapshotOrigin) -> Result<(), String>;
}

/// The task's store as the SDK's [`State`](wasmstream_sdk::State); the
/// first store error is kept and reported after the batch.
struct NativeState<'a> {
    store: &'a mut TaskStore,
    error: Option<StateError>,
}

impl NativeState<'_> {
    fn keep<T: Default>(&mut self, r: Result<T, StateError>) -> T {
        r.unwrap_or_else(|e| {
            self.error.get_or_insert(e);
            T::default()
        })
    }
}

impl wasmstream_sdk::State for NativeState<'_> {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let r = self.store.get(key);
        self.keep(r)
    }
    fn put(&mut self, key: &[u8], value: &[u8]) {
        let r = self.store.put(key, value);
        self.keep(r)
    }
    fn delete(&mut self, key: &[u8]) {
        let r = self.store.delete(key);
        self.keep(r)
    }
    fn scan_prefix(&mut self, prefix: &[u8], limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        let r = self.store.scan_prefix(prefix, limit);
        self.keep(r)
    }
}

impl<P: wasmstream_sdk::Processor + Send> NativeProcessor for P {
    fn init(&mut self, config: &[(String, String)]) -> Result<(), String> {
        wasmstream_sdk::Processor::init(self, &wasmstream_sdk::Config::new(config.to_vec())).map_err(|e| e.to_string())
    }
    fn process_batch(
        &mut self,
        store: &mut TaskStore,
        batch: &[u8],
        outputs: &mut Vec<u8>,
    ) -> Result<Option<(usize, String)>, StateError> {
        let mut state = NativeState { store, error: None };
        let failure = packed::process_batch(self, &mut state, batch, outputs);
        state.error.map_or(Ok(failure), Err)
    }
    fn snapshot(&self) -> Vec<u8> {
        wasmstream_sdk::Processor::snapshot(self)
    }
    fn restore(&mut self, snapshot: &[u8], origin: &SnapshotOrigin) -> Result<(), String> {
        let origin = wasmstream_sdk::SnapshotOrigin {
            module_digest: origin.module_digest.clone(),
            same_module: origin.same_module,
        };
        wasmstream_sdk::Processor::restore(self, snapshot, &origin).map_err(|e| e.to_string())
    }
}

/// An instance's exports.
enum Bindings {
    Batch(BatchProcessor),
    Native(Box<dyn NativeProcessor>),
    /// With the input record handed to the guest, reused so that its buffers
    /// are allocated once, not per record.
    Record(Processor, Box<Scratch>),
}

#[derive(Default)]
struct Scratch {
    record: Option<InputRecord>,
}

/// One processor instance, owned by one task.
pub struct Instance {
    store: Store<TaskData>,
    bindings: Bindings,
}

/// The record of a batch at which the guest stopped with an error.
#[derive(Debug)]
pub struct BatchFailure {
    /// Its index in the batch: the records before it were processed, their
    /// outputs are in the outputs buffer; its own outputs are not.
    pub index: u32,
    pub error: GuestError,
}

impl GuestError {
    /// An error `process-batch` reported (or a malformed batch buffer).
    pub fn batch(message: String) -> GuestError {
        GuestError::Guest { export: "process-batch", message }
    }
}

fn malformed(e: FormatError) -> GuestError {
    GuestError::batch(e.to_string())
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
        let config = config.to_vec();
        let r = match &mut self.bindings {
            Bindings::Batch(b) => b.call_init(&mut self.store, &config),
            Bindings::Record(b, _) => b.call_init(&mut self.store, &config),
            Bindings::Native(p) => Ok(p.init(&config)),
        };
        outcome("init", r)
    }

    /// Processes a packed input batch (see [`packed`]), writing the packed
    /// outputs into `outputs`. `Ok(Some(failure))`: the guest stopped at a
    /// record; `Err`: the call itself failed (a trap poisons the instance).
    /// The state of the records' keys is read ahead: taken before this call
    /// by a task that sealed the batch, else read now ([`TaskStore::prefetch`]).
    pub fn process_batch(&mut self, batch: &[u8], outputs: &mut Vec<u8>) -> Result<Option<BatchFailure>, GuestError> {
        if let Ok(b) = InputBatch::read(batch) {
            self.store().prefetch(b.records().map_while(Result::ok).filter_map(|r| r.key));
        }
        let r = self.call_batch(batch, outputs);
        self.store().end_prefetch();
        r
    }

    fn call_batch(&mut self, batch: &[u8], outputs: &mut Vec<u8>) -> Result<Option<BatchFailure>, GuestError> {
        outputs.clear();
        match &mut self.bindings {
            Bindings::Batch(b) => {
                let out = b
                    .call_process_batch(&mut self.store, batch)
                    .map_err(|e| GuestError::Trap { export: "process-batch", message: describe(&e) })?;
                *outputs = out.outputs;
                Ok(out.failure.map(|f| BatchFailure { index: f.index, error: GuestError::batch(f.message) }))
            }
            Bindings::Native(p) => {
                let failure = p
                    .process_batch(&mut self.store.data_mut().store, batch, outputs)
                    .map_err(|e| GuestError::Trap { export: "process-batch", message: e.to_string() })?;
                Ok(failure
                    .map(|(index, message)| BatchFailure { index: index as u32, error: GuestError::batch(message) }))
            }
            Bindings::Record(b, scratch) => {
                let batch = InputBatch::read(batch).map_err(malformed)?;
                for (i, rec) in batch.records().enumerate() {
                    let rec = rec.map_err(malformed)?;
                    let input = scratch.fill(batch.topic, batch.partition, &rec);
                    match outcome("process", b.call_process(&mut self.store, input)) {
                        Ok(outs) => {
                            for o in &outs {
                                let hs = o.headers.iter().map(|h| (h.key.as_str(), h.value.as_deref()));
                                let (key, value) = (o.key.as_deref(), o.value.as_deref());
                                let n = o.headers.len() as u32;
                                packed::push_output(
                                    outputs,
                                    i as u32,
                                    o.topic.as_deref(),
                                    o.timestamp,
                                    key,
                                    value,
                                    n,
                                    hs,
                                );
                            }
                        }
                        Err(error @ GuestError::Guest { .. }) => {
                            return Ok(Some(BatchFailure { index: i as u32, error }));
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(None)
            }
        }
    }

    pub fn snapshot(&mut self) -> Result<Vec<u8>, GuestError> {
        let r = match &self.bindings {
            Bindings::Batch(b) => b.call_snapshot(&mut self.store),
            Bindings::Record(b, _) => b.call_snapshot(&mut self.store),
            Bindings::Native(p) => Ok(p.snapshot()),
        };
        outcome("snapshot", r.map(Ok))
    }

    /// Hands the instance a snapshot taken by the module `origin` names.
    pub fn restore(&mut self, snapshot: &[u8], origin: &SnapshotOrigin) -> Result<(), GuestError> {
        let r = match &mut self.bindings {
            Bindings::Batch(b) => b.call_restore(&mut self.store, snapshot, origin),
            Bindings::Record(b, _) => b.call_restore(&mut self.store, snapshot, origin),
            Bindings::Native(p) => Ok(p.restore(snapshot, origin)),
        };
        outcome("restore", r)
    }

    /// The task's state store, to read.
    pub fn state(&self) -> &TaskStore {
        &self.store.data().store
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

impl Scratch {
    /// The typed record for `rec`, in buffers reused from the last one.
    fn fill(&mut self, topic: &str, partition: i32, rec: &packed::InputRef<'_>) -> &InputRecord {
        let r = self.record.get_or_insert_with(|| InputRecord {
            topic: String::new(),
            partition,
            offset: 0,
            timestamp: None,
            key: None,
            value: None,
            headers: Vec::new(),
        });
        if r.topic != topic {
            r.topic.clear();
            r.topic.push_str(topic);
        }
        r.partition = partition;
        r.offset = rec.offset;
        r.timestamp = rec.timestamp;
        copy_into(&mut r.key, rec.key);
        copy_into(&mut r.value, rec.value);
        r.headers.clear();
        r.headers.extend(rec.headers.iter().map(|(k, v)| Header { key: k.to_string(), value: v.map(<[u8]>::to_vec) }));
        r
    }
}

fn copy_into(dst: &mut Option<Vec<u8>>, src: Option<&[u8]>) {
    match (dst.as_mut(), src) {
        (Some(d), Some(s)) => {
            d.clear();
            d.extend_from_slice(s);
        }
        (None, Some(s)) => *dst = Some(s.to_vec()),
        (_, None) => *dst = None,
    }
}
