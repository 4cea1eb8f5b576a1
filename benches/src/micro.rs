//! The guest call alone, no Kafka: ns per 16-byte key + 100-byte value
//! record through the product's path (`wasmstream::guest`, batches as the
//! tasks send them), the same logic compiled into the host, the state
//! imports, and the ABI shapes the batch format was chosen among.
//! `--only NAME` runs one measurement (for `valgrind --tool=callgrind`).

use std::time::Instant;

use wasmstream::guest::{Instance, Module};
use wasmstream_sdk::packed::InputWriter;
use wasmtime::Store;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

mod batch {
    wasmtime::component::bindgen!({ world: "batch", path: "wit" });
}

#[derive(clap::Args)]
pub struct Args {
    /// Records per measurement.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    /// Directory of the built guest components.
    #[arg(long, default_value = "target/guests/wasm32-wasip2/guest")]
    guests: std::path::PathBuf,
    /// Only this measurement: product, native, count, typed, typed-list,
    /// spans, packed.
    #[arg(long)]
    only: Option<String>,
}

/// Records per call of the ABI-shape comparison.
const BATCH: usize = 64;

fn value(i: usize) -> Vec<u8> {
    (0..100).map(|j| b'a' + ((i + j) % 26) as u8).collect()
}

/// Runs `f` (which handles `per_call` records) often enough for `n` records
/// and prints ns per record, unless `--only` names another measurement.
fn time(
    args: &Args,
    name: &str,
    label: &str,
    per_call: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    if args.only.as_deref().is_some_and(|o| o != name) {
        return Ok(f64::NAN);
    }
    let calls = (args.records / per_call).max(1);
    let t = Instant::now();
    for _ in 0..calls {
        f()?;
    }
    let ns = t.elapsed().as_nanos() as f64 / (calls * per_call) as f64;
    println!("  {label:<58} {ns:>7.0} ns/record");
    Ok(ns)
}

/// A product-path instance of `module` with a fresh state store.
fn instance(module: &Module, dir: &std::path::Path) -> anyhow::Result<Instance> {
    let (store, _) = wasmstream::state::TaskStore::open(dir, false)?;
    Ok(module.instantiate(store, "bench".into(), &[])?)
}

/// One batch call through the product path; fails if the guest did.
fn call(inst: &mut Instance, batch: &[u8], outputs: &mut Vec<u8>) -> anyhow::Result<()> {
    let failure = inst.process_batch(batch, outputs)?;
    anyhow::ensure!(failure.is_none(), "the processor failed: {failure:?}");
    std::hint::black_box(outputs);
    Ok(())
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    println!("guest call, {} records of 16-byte key + 100-byte value (lower is better)", args.records);
    let engine = wasmstream::guest::engine()?;
    let dir = tempfile::tempdir()?;

    // 1. The product's path, in batches as the tasks send them.
    let per_batch = wasmstream::task::MAX_BATCH_RECORDS as usize;
    let batch_of = |keys: &mut dyn FnMut(usize) -> Vec<u8>| {
        let mut w = InputWriter::default();
        w.begin("in", 0);
        for i in 0..per_batch {
            w.push(i as i64, Some(0), Some(&keys(i)), Some(&value(i)), 0, std::iter::empty());
        }
        w
    };
    let same_key = batch_of(&mut |_| b"key-000000000000".to_vec());
    let mut outputs = Vec::new();
    let uppercase = Module::load(&engine, &args.guests.join("uppercase.wasm"), 1 << 30, None)?;
    let mut inst = instance(&uppercase, &dir.path().join("upper"))?;
    let wasm =
        time(args, "product", &format!("uppercase example (WASM), {per_batch} records/call"), per_batch, || {
            call(&mut inst, same_key.as_bytes(), &mut outputs)
        })?;
    let native = Module::native::<uppercase::Uppercase>(&engine, "uppercase");
    let mut inst = instance(&native, &dir.path().join("native"))?;
    let native = time(args, "native", "the same, compiled into the host", per_batch, || {
        call(&mut inst, same_key.as_bytes(), &mut outputs)
    })?;
    if !wasm.is_nan() && !native.is_nan() {
        // The goal the pipeline's "WASM map / the same map compiled into
        // the host" row also judges, here for the call alone, without Kafka.
        let ratio = native / wasm;
        let verdict = if ratio >= 0.9 { "met" } else { "NOT met" };
        println!(
            "  {:<58} {:>7.2}   goal >= 0.9 (the call itself at most 10% slower): {verdict}",
            "WASM / native, records/s", ratio
        );
    }
    // The count example: one state get and one put per record, over 16,384
    // keys (64 batches of 256 distinct keys, in turn).
    let count = Module::load(&engine, &args.guests.join("count.wasm"), 1 << 30, None)?;
    let mut inst = instance(&count, &dir.path().join("count"))?;
    let batches: Vec<InputWriter> =
        (0..64).map(|r| batch_of(&mut |i| format!("key-{:012}", r * per_batch + i).into_bytes())).collect();
    let mut round = 0;
    let counted = time(args, "count", "count example (state get + put per record)", per_batch, || {
        round += 1;
        call(&mut inst, batches[round % batches.len()].as_bytes(), &mut outputs)
    })?;
    if !wasm.is_nan() && !counted.is_nan() {
        println!("  {:<58} {:>7.0} ns", "so a state get + put from the guest costs about", counted - wasm);
    }

    // 2. The ABI shapes: one typed call per record, a typed list per call,
    //    typed spans over one buffer, one packed buffer (the product's choice).
    let component = Component::from_file(&engine, args.guests.join("bench_batch_guest.wasm"))
        .map_err(|e| anyhow::anyhow!("bench_batch_guest.wasm (built by scripts/build-guests): {e}"))?;
    let mut linker = Linker::<Ctx>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let mut store = Store::new(&engine, Ctx { wasi: WasiCtx::builder().build(), table: ResourceTable::new() });
    let b = batch::Batch::instantiate(&mut store, &component, &linker)?;
    let records: Vec<batch::InputRecord> = (0..BATCH)
        .map(|i| batch::InputRecord {
            topic: "in".into(),
            partition: 0,
            offset: i as i64,
            timestamp: Some(0),
            key: Some(b"key-000000000000".to_vec()),
            value: Some(value(i)),
            headers: Vec::new(),
        })
        .collect();
    println!("ABI shapes, same upper-case logic (benches/batch-guest):");
    let mut i = 0;
    time(args, "typed", "typed process(input-record), one call per record", 1, || {
        i += 1;
        let out = b.call_process(&mut store, &records[i % BATCH])?;
        std::hint::black_box(out.map_err(anyhow::Error::msg)?);
        Ok(())
    })?;
    time(args, "typed-list", &format!("typed list<input-record>, {BATCH} records/call"), BATCH, || {
        std::hint::black_box(b.call_process_batch(&mut store, &records)?);
        Ok(())
    })?;
    let mut data = Vec::new();
    let mut spans = Vec::new();
    for r in &records {
        let (k, v) = (r.key.as_deref().unwrap_or(&[]), r.value.as_deref().unwrap_or(&[]));
        let key_start = data.len() as u32;
        data.extend_from_slice(k);
        let value_start = data.len() as u32;
        data.extend_from_slice(v);
        spans.push(batch::InSpan {
            partition: 0,
            offset: r.offset,
            timestamp: 0,
            key_start,
            key_len: k.len() as i32,
            value_start,
            value_len: v.len() as i32,
            headers_start: 0,
            headers_count: 0,
        });
    }
    time(args, "spans", &format!("typed spans over one buffer, {BATCH} records/call"), BATCH, || {
        std::hint::black_box(b.call_process_spans(&mut store, &data, &spans)?);
        Ok(())
    })?;
    let mut packed = Vec::new();
    for r in &records {
        for f in [&r.key, &r.value] {
            let f = f.as_deref().unwrap_or_default();
            packed.extend_from_slice(&(f.len() as u32).to_le_bytes());
            packed.extend_from_slice(f);
        }
    }
    time(args, "packed", &format!("one packed buffer each way, {BATCH} records/call"), BATCH, || {
        std::hint::black_box(b.call_process_packed(&mut store, &packed)?);
        Ok(())
    })?;
    Ok(())
}

struct Ctx {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
