//! The guest call alone: no Kafka, no RocksDB writes, 100-byte values.

use std::time::Instant;

use wasmstream::guest::Module;
use wasmstream_sdk::packed::InputWriter;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store};
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
}

const BATCH: usize = 64;

fn value(i: usize) -> Vec<u8> {
    (0..100).map(|j| b'a' + ((i + j) % 26) as u8).collect()
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let n = args.records;
    println!("guest call, {n} records of 16-byte key + 100-byte value (lower is better)");

    // 1. The product's own path: wasmstream::guest with the uppercase example.
    let engine = wasmstream::guest::engine()?;
    let module = Module::load(&engine, &args.guests.join("uppercase.wasm"), 1 << 30)?;
    let dir = tempfile::tempdir()?;
    let (store, _) = wasmstream::state::TaskStore::open(dir.path(), false)?;
    let mut inst = module.instantiate(store, "bench".into(), &[])?;
    // Batches of MAX_BATCH_RECORDS, as the host's tasks send them.
    let per_batch = wasmstream::task::MAX_BATCH_RECORDS as usize;
    let mut batch = InputWriter::default();
    batch.begin("in", 0);
    for i in 0..per_batch {
        batch.push(i as i64, Some(0), Some(b"key-000000000000"), Some(&value(i)), 0, std::iter::empty());
    }
    let mut outputs = Vec::new();
    let t = Instant::now();
    for _ in 0..n / per_batch {
        let failure = inst.process_batch(batch.as_bytes(), &mut outputs)?;
        anyhow::ensure!(failure.is_none(), "uppercase failed: {failure:?}");
        std::hint::black_box(&outputs);
    }
    let host_path = t.elapsed().as_nanos() as f64 / (n / per_batch * per_batch) as f64;
    println!("  wasmstream::guest, uppercase example, {per_batch}/call      {host_path:>8.0} ns/record");
    let values: Vec<Vec<u8>> = (0..26).map(value).collect();
    let t = Instant::now();
    for i in 0..n {
        std::hint::black_box(uppercase::upper(std::hint::black_box(&values[i % 26])));
    }
    let native = t.elapsed().as_nanos() as f64 / n as f64;
    println!("  the same logic compiled into the host              {native:>8.0} ns/record");

    // 2. One call per record vs. one call per 64 records, same logic.
    let engine = Engine::default();
    let component = Component::from_file(&engine, args.guests.join("bench_batch_guest.wasm"))
        .map_err(|e| anyhow::anyhow!("bench_batch_guest.wasm (built by scripts/build-guests): {e}"))?;
    let mut linker = Linker::<Ctx>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let mut store = Store::new(&engine, Ctx { wasi: WasiCtx::builder().build(), table: ResourceTable::new() });
    let b = batch::Batch::instantiate(&mut store, &component, &linker)?;
    let mk = |i: usize| batch::InputRecord {
        topic: "in".into(),
        partition: 0,
        offset: i as i64,
        timestamp: Some(0),
        key: Some(b"key-000000000000".to_vec()),
        value: Some(value(i)),
        headers: Vec::new(),
    };
    let records: Vec<batch::InputRecord> = (0..BATCH).map(mk).collect();
    let t = Instant::now();
    for i in 0..n {
        let out = b.call_process(&mut store, &records[i % BATCH])?;
        std::hint::black_box(out.map_err(anyhow::Error::msg)?);
    }
    let single = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    for _ in 0..n / BATCH {
        let out = b.call_process_batch(&mut store, &records)?;
        std::hint::black_box(out);
    }
    let batched = t.elapsed().as_nanos() as f64 / (n / BATCH * BATCH) as f64;
    // 3. The same batches packed into one buffer each way.
    let mut packed = Vec::new();
    for r in &records {
        for f in [&r.key, &r.value] {
            match f {
                None => packed.extend_from_slice(&u32::MAX.to_le_bytes()),
                Some(f) => {
                    packed.extend_from_slice(&(f.len() as u32).to_le_bytes());
                    packed.extend_from_slice(f);
                }
            }
        }
    }
    let t = Instant::now();
    for _ in 0..n / BATCH {
        let out = b.call_process_packed(&mut store, &packed)?;
        std::hint::black_box(out);
    }
    let packed_ns = t.elapsed().as_nanos() as f64 / (n / BATCH * BATCH) as f64;
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
    let t = Instant::now();
    for _ in 0..n / BATCH {
        let out = b.call_process_spans(&mut store, &data, &spans)?;
        std::hint::black_box(out);
    }
    let spans_ns = t.elapsed().as_nanos() as f64 / (n / BATCH * BATCH) as f64;
    println!("  one process call per record                       {single:>8.0} ns/record");
    println!("  one process-spans call per {BATCH} records             {spans_ns:>8.0} ns/record");
    println!("  one process-packed call per {BATCH} records            {packed_ns:>8.0} ns/record");
    println!("  one process-batch call per {BATCH} records             {batched:>8.0} ns/record");
    println!("  batching saves                                    {:>8.1} %", 100.0 * (single - batched) / single);
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
