//! One conformance suite for every guest language (no broker: the host's
//! component API, the way a task calls it). Each language gives its word
//! count and the echo processor of `tests/conformance/README.md`:
//!
//! - the word counts' outputs, state and snapshots for a fixed input equal
//!   the Rust example's;
//! - `snapshot` → `restore` in a fresh instance continues exactly as an
//!   instance that never stopped;
//! - a guest error (`init`, `process`, `restore`) is reported with the
//!   guest's message, the instance stays usable, and nothing after it ran;
//! - 1 MiB, empty and absent values, binary and absent keys and many headers
//!   (absent, empty and repeated) pass through the echo unchanged.
//!
//! Adding a language is one entry in [`LANGUAGES`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use wasmstream::compiled::CompileCache;
use wasmstream::guest::{GuestError, Instance, Module, SnapshotOrigin};
use wasmstream::state::TaskStore;
use wasmstream_sdk::packed::{InputWriter, read_outputs};

use crate::support::{guest, sentences, workspace};

struct Language {
    name: &'static str,
    /// Components built by `scripts/build-guests --all`.
    wordcount: &'static str,
    echo: &'static str,
}

const LANGUAGES: &[Language] = &[
    Language { name: "rust", wordcount: "wordcount", echo: "echo" },
    Language { name: "python", wordcount: "wordcount-python", echo: "echo-python" },
    Language { name: "javascript", wordcount: "wordcount-js", echo: "echo-js" },
    Language { name: "c", wordcount: "wordcount-c", echo: "echo-c" },
    Language { name: "go", wordcount: "wordcount-go", echo: "echo-go" },
];

/// An input record.
#[derive(Debug, Clone, Default)]
struct In {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: Option<i64>,
}

fn text(value: &str) -> In {
    In { key: Some(b"k".to_vec()), value: Some(value.as_bytes().to_vec()), ..In::default() }
}

/// An output record, with the offset of the input it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Out {
    offset: i64,
    topic: Option<String>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: Option<i64>,
}

/// Each component compiled once per test run (and cached on disk across runs).
fn module(name: &str) -> Module {
    static MODULES: OnceLock<Mutex<HashMap<String, Module>>> = OnceLock::new();
    let modules = MODULES.get_or_init(Default::default);
    let path = guest(name);
    let mut modules = modules.lock().unwrap_or_else(|p| p.into_inner());
    modules
        .entry(name.to_string())
        .or_insert_with(|| {
            let engine = wasmstream::guest::engine().expect("engine");
            let cache = CompileCache::new(workspace().join("target/conformance-compiled"));
            Module::load(&engine, &path, 1 << 30, Some(&cache)).unwrap_or_else(|e| panic!("{name}: {e}"))
        })
        .clone()
}

fn config(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A fresh instance on a fresh store.
/// The origin of a snapshot `name` took itself (a restart).
fn same_module(name: &str) -> SnapshotOrigin {
    SnapshotOrigin { module_digest: module(name).digest, same_module: true }
}

fn instance(name: &str, dir: &Path, config: &[(String, String)]) -> Result<Instance, GuestError> {
    let (store, _) = TaskStore::open(dir, false).expect("open a state store");
    module(name).instantiate(store, Arc::from(name), config)
}

/// Runs `inputs` (offsets from `first`) as one batch of partition 0 of topic
/// `in`: the outputs, and the failure if a record was rejected.
fn run(instance: &mut Instance, first: i64, inputs: &[In]) -> (Vec<Out>, Option<(u32, GuestError)>) {
    let mut batch = InputWriter::default();
    batch.begin("in", 0);
    for (i, r) in inputs.iter().enumerate() {
        let headers = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref()));
        batch.push(
            first + i as i64,
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            r.headers.len() as u32,
            headers,
        );
    }
    let mut buf = Vec::new();
    let failure =
        instance.process_batch(batch.as_bytes(), &mut buf).unwrap_or_else(|e| panic!("the batch trapped: {e}"));
    let outs = read_outputs(&buf)
        .map(|o| {
            let o = o.expect("well-formed outputs");
            Out {
                offset: first + i64::from(o.input),
                topic: o.topic.map(str::to_string),
                key: o.key.map(<[u8]>::to_vec),
                value: o.value.map(<[u8]>::to_vec),
                headers: o.headers.iter().map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec))).collect(),
                timestamp: o.timestamp,
            }
        })
        .collect();
    (outs, failure.map(|f| (f.index, f.error)))
}

/// Runs batches of the sizes in `sizes` (the rest in one) and expects no failure.
fn run_all(instance: &mut Instance, first: i64, inputs: &[In], sizes: &[usize]) -> Vec<Out> {
    let mut outs = Vec::new();
    let mut at: usize = 0;
    for size in sizes.iter().copied().chain([usize::MAX]) {
        let end = at.saturating_add(size).min(inputs.len());
        let (o, failure) = run(instance, first + at as i64, &inputs[at..end]);
        assert!(failure.is_none(), "a record was rejected: {failure:?}");
        outs.extend(o);
        at = end;
        if at == inputs.len() {
            break;
        }
    }
    outs
}

/// The input of the word-count comparison: generated sentences and text
/// every language splits and lower-cases the same way (see each example's
/// notes on Unicode: no uncased scripts, non-ASCII digits or final sigma).
fn wordcount_input() -> Vec<In> {
    let mut inputs: Vec<In> = sentences(300, 11).iter().map(|(_, v)| text(v)).collect();
    for (i, t) in [
        "Don't STOP -- the 'quoted' words, ok?",
        "café Über naïve ÉCOLE straße ÀÉÎÕÜ",
        "Привет мир, ПРИВЕТ! Ελλάδα αλφα",
        "numbers 42 and 3.14 and x2 2x",
        "''' '' 'a' b'' 'c",
        "tabs\tand\nnewlines  and   spaces",
        "",
        "the the THE The tHe",
    ]
    .iter()
    .enumerate()
    {
        inputs.insert(i * 37, text(t));
    }
    inputs.insert(100, In { key: None, value: None, ..In::default() });
    inputs
}

/// What a word count leaves: its outputs, its state entries and its snapshot.
type Run = (Vec<Out>, Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>);

#[test]
fn every_word_count_gives_the_outputs_state_and_snapshot_of_the_rust_one() {
    let inputs = wordcount_input();
    for cfg in [config(&[]), config(&[("min-length", "3")])] {
        let mut reference: Option<Run> = None;
        for lang in LANGUAGES {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut i = instance(lang.wordcount, dir.path(), &cfg).unwrap_or_else(|e| panic!("{}: {e}", lang.name));
            let outs = run_all(&mut i, 0, &inputs, &[1, 64, 7]);
            let state = i.store().scan_prefix(b"", 0).expect("scan");
            let snapshot = i.snapshot().expect("snapshot");
            assert!(outs.len() > 1000, "{}: {} outputs", lang.name, outs.len());
            match &reference {
                None => reference = Some((outs, state, snapshot)),
                Some((o, s, snap)) => {
                    if let Some(k) = (0..o.len().max(outs.len())).find(|&k| o.get(k) != outs.get(k)) {
                        panic!(
                            "{} (config {cfg:?}): output {k} is {:?}, the Rust example's is {:?}",
                            lang.name,
                            outs.get(k),
                            o.get(k)
                        );
                    }
                    assert!(state == *s, "{}: the state differs from the Rust example's", lang.name);
                    assert_eq!(snapshot, *snap, "{}: snapshot", lang.name);
                }
            }
        }
    }
}

#[test]
fn a_restored_instance_continues_as_one_that_never_stopped() {
    let word_inputs = wordcount_input();
    let echo_inputs: Vec<In> = (0..200).map(|i| text(&format!("record {i}"))).collect();
    for lang in LANGUAGES {
        for (name, inputs) in [(lang.wordcount, &word_inputs), (lang.echo, &echo_inputs)] {
            let half = inputs.len() / 2;
            let dir = tempfile::tempdir().expect("tempdir");
            let mut whole = instance(name, dir.path(), &[]).expect("instantiate");
            let all = run_all(&mut whole, 0, inputs, &[50]);
            let end = whole.snapshot().expect("snapshot");

            let dir = tempfile::tempdir().expect("tempdir");
            let mut first = instance(name, dir.path(), &[]).expect("instantiate");
            let before = run_all(&mut first, 0, &inputs[..half], &[50]);
            let snapshot = first.snapshot().expect("snapshot");
            // A fresh instance on the same state, as a task restored from a checkpoint.
            let mut second = module(name).instantiate(first.into_store(), Arc::from(name), &[]).expect("instantiate");
            second.restore(&snapshot, &same_module(name)).unwrap_or_else(|e| panic!("{name}: restore: {e}"));
            let after = run_all(&mut second, half as i64, &inputs[half..], &[50]);
            assert_eq!([before, after].concat(), all, "{name}: outputs across a restore");
            assert_eq!(second.snapshot().expect("snapshot"), end, "{name}: snapshot at the end");
        }
    }
}

#[test]
fn guest_errors_are_reported_with_their_message_and_the_instance_goes_on() {
    for lang in LANGUAGES {
        let dir = tempfile::tempdir().expect("tempdir");
        // init: a bad config value, named.
        match instance(lang.wordcount, dir.path(), &config(&[("min-length", "x")])) {
            Err(GuestError::Guest { export: "init", message }) => {
                assert!(message.contains("min-length"), "{}: {message}", lang.name)
            }
            Err(e) => panic!("{}: init must return an error, not {e}", lang.name),
            Ok(_) => panic!("{}: init accepted min-length = x", lang.name),
        }

        // process: a value that is not UTF-8, in the middle of a batch.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut i = instance(lang.wordcount, dir.path(), &[]).expect("instantiate");
        let bad = In { value: Some(b"caf\xe9 au lait".to_vec()), ..In::default() };
        let (outs, failure) = run(&mut i, 10, &[text("one two"), bad, text("three")]);
        let (index, error) = failure.unwrap_or_else(|| panic!("{}: invalid UTF-8 accepted", lang.name));
        assert_eq!(index, 1, "{}: the rejected record", lang.name);
        match error {
            GuestError::Guest { message, .. } => {
                assert!(message.contains("in/0@11 is not UTF-8"), "{}: {message}", lang.name)
            }
            e => panic!("{}: a rejected record must be a guest error, not {e}", lang.name),
        }
        assert_eq!(outs.iter().map(|o| o.offset).collect::<Vec<_>>(), [10, 10], "{}: outputs before it", lang.name);
        // The instance is still usable: the records after it run now.
        let (outs, failure) = run(&mut i, 12, &[text("three one")]);
        assert!(failure.is_none(), "{}: {failure:?}", lang.name);
        let counts: Vec<&[u8]> = outs.iter().filter_map(|o| o.value.as_deref()).collect();
        assert_eq!(counts, [b"1", b"2"], "{}: counts go on", lang.name);

        // restore: a snapshot of the wrong size.
        match i.restore(b"abc", &same_module(lang.wordcount)) {
            Err(GuestError::Guest { export: "restore", message }) => {
                assert!(message.contains("expected 8"), "{}: {message}", lang.name)
            }
            other => panic!("{}: restore of 3 bytes gave {other:?}", lang.name),
        }

        // The echo's own rejection, word for word.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = instance(lang.echo, dir.path(), &[]).expect("instantiate");
        let (outs, failure) = run(&mut e, 0, &[text("a"), text("b"), text("fail"), text("c")]);
        assert_eq!(outs.len(), 2, "{}: echo outputs before the failure", lang.name);
        match failure {
            Some((2, GuestError::Guest { message, .. })) => {
                assert_eq!(message, "asked to fail at offset 2", "{}", lang.name)
            }
            other => panic!("{}: echo of `fail` gave {other:?}", lang.name),
        }
    }
}

#[test]
fn large_empty_and_absent_values_binary_keys_and_many_headers_pass_through() {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    };
    let many: Vec<(String, Option<Vec<u8>>)> = (0..100)
        .map(|i| match i % 4 {
            0 => (format!("h{i}"), None),
            1 => (format!("h{i}"), Some(Vec::new())),
            2 => ("dup".to_string(), Some(vec![i as u8, 0, 255])),
            _ => (format!("ünïcode-{i}"), Some(format!("v{i}").into_bytes())),
        })
        .collect();
    let inputs = vec![
        In { key: Some(noise(64)), value: Some(noise(1 << 20)), timestamp: Some(1_700_000_000_000), ..In::default() },
        In { key: Some(Vec::new()), value: Some(Vec::new()), ..In::default() },
        In { key: None, value: None, ..In::default() },
        In { key: Some((0..=255).collect()), value: Some(b"\0\xff\xfe not utf-8 \xc3".to_vec()), ..In::default() },
        In { key: Some(b"k".to_vec()), value: Some(b"v".to_vec()), headers: many, timestamp: Some(-1) },
    ];
    let expected: Vec<Out> = inputs
        .iter()
        .enumerate()
        .map(|(i, r)| Out {
            offset: i as i64,
            topic: None,
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r.headers.clone(),
            timestamp: None,
        })
        .collect();
    for lang in LANGUAGES {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut e = instance(lang.echo, dir.path(), &[]).expect("instantiate");
        let outs = run_all(&mut e, 0, &inputs, &[]);
        for (k, (got, want)) in outs.iter().zip(&expected).enumerate() {
            assert!(
                got == want,
                "{}: output {k} differs from its input (key {:?})",
                lang.name,
                want.key.as_ref().map(Vec::len)
            );
        }
        assert_eq!(outs.len(), expected.len(), "{}: one output per input", lang.name);
    }
}

/// The orders example (validate, enrich, route JSON; examples/python/orders),
/// written in these languages.
const ORDERS: &[(&str, &str)] = &[("python", "orders-python"), ("javascript", "orders-js")];

fn order(json: &str) -> In {
    In { key: Some(b"k".to_vec()), value: Some(json.as_bytes().to_vec()), ..In::default() }
}

#[test]
fn every_orders_router_validates_enriches_and_routes_alike() {
    let inputs = vec![
        order(r#"{"user":"u1","amount_cents":1250,"country":"DE"}"#),
        order(r#"{"user":"u1","amount_cents":25000}"#),
        order(r#"{"amount_cents":5,"user":"u-2","country":null,"extra":[1,2]}"#),
        order(r#"{"user":"u1","amount_cents":1e2,"country":"fr"}"#),
        order(r#"{"user":"u1","amount_cents":10000}"#),
        order("not json"),
        order(r#"[1,2]"#),
        order(r#"{"user":"has space","amount_cents":1}"#),
        order(r#"{"user":"u3","amount_cents":-1}"#),
        order(r#"{"user":"u3","amount_cents":1.5}"#),
        order(r#"{"user":"u3","amount_cents":true}"#),
        order(r#"{"user":"u3","amount_cents":9007199254740992}"#),
        order(r#"{"user":"u3","amount_cents":1,"country":"DEU"}"#),
        order(r#"{"user":"u3","amount_cents":NaN}"#),
        In { key: None, value: None, ..In::default() },
        In { key: Some(b"bin".to_vec()), value: Some(b"{\"user\":\"\xff\"}".to_vec()), ..In::default() },
        order(r#"{"user":"u-2","amount_cents":9007199254740991,"country":"US"}"#),
    ];
    let cfg = config(&[("large-topic", "large"), ("invalid-topic", "invalid")]);
    let mut reference: Option<Vec<Out>> = None;
    for (lang, name) in ORDERS {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut i = instance(name, dir.path(), &cfg).unwrap_or_else(|e| panic!("{lang}: {e}"));
        let outs = run_all(&mut i, 0, &inputs, &[3]);
        assert_eq!(outs.len(), inputs.len(), "{lang}: one output per input, none dropped");
        let text = |o: &Out| String::from_utf8_lossy(o.value.as_deref().unwrap_or_default()).into_owned();
        // Checked values, not only agreement.
        assert_eq!(
            (outs[0].topic.as_deref(), text(&outs[0]).as_str()),
            (None, r#"{"user":"u1","amount_cents":1250,"total_cents":1250,"orders":1,"country":"DE"}"#),
            "{lang}"
        );
        assert_eq!(
            (outs[1].topic.as_deref(), text(&outs[1]).as_str()),
            (Some("large"), r#"{"user":"u1","amount_cents":25000,"total_cents":26250,"orders":2,"country":null}"#),
            "{lang}"
        );
        assert_eq!(outs[4].topic.as_deref(), Some("large"), "{lang}: the threshold is inclusive");
        for k in 5..16 {
            assert_eq!(outs[k].topic.as_deref(), Some("invalid"), "{lang}: input {k} is invalid");
            assert_eq!(outs[k].value, inputs[k].value, "{lang}: an invalid record goes on unchanged");
            assert!(outs[k].headers.iter().any(|(h, _)| h == "error"), "{lang}: input {k} says why");
        }
        match &reference {
            None => reference = Some(outs),
            Some(r) => {
                if let Some(k) = (0..r.len()).find(|&k| r[k] != outs[k]) {
                    panic!("{lang}: output {k} is {:?}, {}'s is {:?}", outs[k], ORDERS[0].0, r[k]);
                }
            }
        }
        // Without an invalid-topic, an invalid record is a guest error naming it.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut strict = instance(name, dir.path(), &config(&[("large-topic", "large")])).expect("instantiate");
        match run(&mut strict, 7, &[order("{}")]) {
            (_, Some((0, GuestError::Guest { message, .. }))) => {
                assert!(message.contains("in/0@7") && message.contains("`user`"), "{lang}: {message}")
            }
            other => panic!("{lang}: {other:?}"),
        }
        let dir = tempfile::tempdir().expect("tempdir");
        match instance(name, dir.path(), &[]) {
            Err(GuestError::Guest { export: "init", message }) => {
                assert!(message.contains("large-topic"), "{lang}: {message}")
            }
            Err(e) => panic!("{lang}: {e}"),
            Ok(_) => panic!("{lang}: init without large-topic succeeded"),
        }
    }
}

/// Every `state` import as a guest calls it (the typed guest: raw WIT, no
/// SDK, one import call per operation): puts, a delete, gets and prefix
/// scans, over entries in RocksDB (a checkpoint written) and newer ones in
/// the write-back cache that shadow or delete them.
#[test]
fn the_state_imports_put_get_delete_and_scan_as_a_guest_calls_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut i = instance("typed_guest", dir.path(), &[]).expect("instantiate the typed guest");
    let ops = |i: &mut Instance, ops: &[&str]| -> Vec<(String, String)> {
        let inputs: Vec<In> = ops
            .iter()
            .map(|op| In { key: Some(b"!state".to_vec()), value: Some(op.as_bytes().to_vec()), ..In::default() })
            .collect();
        let (outs, failure) = run(i, 0, &inputs);
        assert!(failure.is_none(), "{failure:?}");
        let text = |b: Option<Vec<u8>>| String::from_utf8(b.expect("present")).expect("UTF-8");
        outs.into_iter().map(|o| (text(o.key), text(o.value))).collect()
    };
    ops(&mut i, &["put a=1", "put ab=2", "put b=3", "put c=5"]);
    let local = i.store().freeze();
    local
        .write(&wasmstream::checkpoint::Checkpoint::new(1, Default::default(), String::new()), b"", None)
        .expect("write");
    drop(i.store().release());
    let got =
        ops(&mut i, &["put ac=4", "delete ab", "put b=33", "delete c", "get a", "get ab", "get b", "scan a", "scan "]);
    let expected = [("a", "1"), ("b", "33"), ("a", "1"), ("ac", "4"), ("a", "1"), ("ac", "4"), ("b", "33")];
    assert_eq!(got, expected.map(|(k, v)| (k.to_string(), v.to_string())));
}
