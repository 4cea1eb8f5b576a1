//! Hot swap on a real broker (I5), through the `wasmstream swap` command a
//! user runs: under continuous input, `tests/swap/v1` → `v2` (new output
//! format, migrated snapshot) under each guarantee; and v2s that fail (not a
//! component, `init`, `restore`, a trap on the first record) leave v1
//! running. Every input record's output appears once, from one version, v1's
//! before v2's per partition, with the partition's count carried across.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;

/// One output of the swap fixtures: `v<version> <partition>@<offset> n=<records> k=<count>`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Out {
    version: u8,
    partition: i32,
    offset: i64,
    n: u64,
}

fn parse(r: &Rec) -> Out {
    let parsed = (|| {
        let mut parts = r.value.split(' ');
        let version = match parts.next()? {
            "v1" => 1,
            "v2" => 2,
            _ => return None,
        };
        let (p, o) = parts.next()?.split_once('@')?;
        let n = parts.next()?.strip_prefix("n=")?;
        Some(Out { version, partition: p.parse().ok()?, offset: o.parse().ok()?, n: n.parse().ok()? })
    })();
    parsed.unwrap_or_else(|| panic!("not a swap fixture output: {:?}", r.value))
}

/// Waits for the host's admin endpoint (the address file it writes).
fn wait_for_admin(app: &App, host: &mut HostProcess) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !app.app_state_dir().join("admin.addr").is_file() {
        assert!(host.is_running(), "host exited:\n{}", host.log_text());
        assert!(Instant::now() < deadline, "no admin endpoint after 60 s:\n{}", host.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `wasmstream swap --config <app> --module <module>`: (success, stdout + stderr).
fn swap(app: &App, module: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmstream"))
        .args(["swap", "--config"])
        .arg(&app.config)
        .arg("--module")
        .arg(module)
        .output()
        .expect("run wasmstream swap");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Waits until the output topic holds at least `n` records.
fn wait_for_outputs(app: &App, n: usize, host: &mut HostProcess) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while read_all(&app.output).len() < n {
        assert!(host.is_running(), "host exited:\n{}", host.log_text());
        assert!(Instant::now() < deadline, "fewer than {n} outputs after 120 s:\n{}", host.log_text());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Stops the feeder, waits until every input record is checkpointed and
/// stops the host gracefully: the whole input, and the host's log.
fn stop_at_end_of_input(app: &App, feeder: Feeder, host: HostProcess) -> (Vec<Rec>, String) {
    feeder.stop();
    let input = read_all(&app.input);
    wait_until_checkpointed_to_end(app, &input, Duration::from_secs(120));
    let (status, log) = host.stop();
    assert!(status.success(), "{status}\n{log}");
    (input, log)
}

/// Checks the outputs against the input: each input record has exactly one
/// output, its partition's outputs are in offset order with the count going
/// 1, 2, 3... across versions, and v1's come before v2's. Returns per
/// partition how many outputs each version made.
fn assert_each_record_once_in_order(input: &[Rec], outputs: &[Rec]) -> BTreeMap<i32, (usize, usize)> {
    let mut by_partition: BTreeMap<i32, Vec<Out>> = BTreeMap::new();
    for r in outputs {
        let o = parse(r);
        by_partition.entry(o.partition).or_default().push(o);
    }
    let mut inputs: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in input {
        inputs.entry(r.partition).or_default().push(r.offset);
    }
    let mut versions = BTreeMap::new();
    for (p, offsets) in &inputs {
        let outs = by_partition.remove(p).unwrap_or_default();
        let seen: Vec<i64> = outs.iter().map(|o| o.offset).collect();
        assert_eq!(&seen, offsets, "partition {p}: one output per input record, in offset order");
        let counts: Vec<u64> = outs.iter().map(|o| o.n).collect();
        let expected: Vec<u64> = (1..=outs.len() as u64).collect();
        assert_eq!(counts, expected, "partition {p}: the record count goes on across the swap");
        let v1 = outs.iter().take_while(|o| o.version == 1).count();
        assert!(outs[v1..].iter().all(|o| o.version == 2), "partition {p}: a v1 output after a v2 one: {outs:?}");
        versions.insert(*p, (v1, outs.len() - v1));
    }
    assert!(by_partition.is_empty(), "outputs for partitions with no input: {by_partition:?}");
    versions
}

/// The per-word counts of the input (first word of each value), per partition.
fn word_counts(input: &[Rec]) -> BTreeMap<i32, BTreeMap<String, u64>> {
    let mut counts: BTreeMap<i32, BTreeMap<String, u64>> = BTreeMap::new();
    for r in input {
        let word = r.value.split(' ').next().unwrap_or_default().to_string();
        *counts.entry(r.partition).or_default().entry(word).or_default() += 1;
    }
    counts
}

fn assert_state_counts(app: &App, input: &[Rec], digest: &str) {
    let expected = word_counts(input);
    for t in app.checkpoints() {
        let c = t.checkpoint.as_ref().unwrap_or_else(|| panic!("task {} has no checkpoint", t.partition));
        assert_eq!(c.module_digest, digest, "task {}: the checkpoint names the module that wrote it", t.partition);
        let state: BTreeMap<String, u64> = t
            .state
            .iter()
            .map(|(k, v)| {
                let bytes: [u8; 8] = v.as_slice().try_into().expect("an 8-byte count");
                (String::from_utf8_lossy(k).into_owned(), u64::from_be_bytes(bytes))
            })
            .collect();
        assert_eq!(state, expected.get(&t.partition).cloned().unwrap_or_default(), "task {}: state", t.partition);
    }
}

fn sha256(path: &Path) -> String {
    wasmstream::guest::digest(&std::fs::read(path).expect("read module"))
}

fn swap_under_load(guarantee: &str) {
    let settings = format!("processing.guarantee = \"{guarantee}\"\ncommit.interval.ms = 300");
    let app = App::new(&format!("swap-{guarantee}"), 3, &guest("swap_v1"), &settings);
    let v2 = guest("swap_v2");
    let feeder = Feeder::start(&app.input, 20, 9000);
    let mut host = app.start();
    wait_for_admin(&app, &mut host);
    wait_for_outputs(&app, 100, &mut host);
    let (ok, said) = swap(&app, &v2);
    assert!(ok, "swap failed: {said}\nhost log:\n{}", host.log_text());
    assert!(said.contains("swapped: every task runs"), "{said}");
    // More input for v2, then everything up to the end of the input.
    std::thread::sleep(Duration::from_secs(2));
    let (input, log) = stop_at_end_of_input(&app, feeder, host);
    for line in ["hot swap requested", "hot swap: loaded", "processing paused", "hot swap completed"] {
        assert!(log.contains(line), "no {line:?} in the log:\n{log}");
    }

    let versions = assert_each_record_once_in_order(&input, &read_all(&app.output));
    assert!(versions.values().all(|(v1, v2)| *v1 > 0 && *v2 > 0), "each partition ran both versions: {versions:?}");
    assert_state_counts(&app, &input, &sha256(&v2));

    // A restart keeps v2 (the config still names v1), and the count goes on.
    produce(&app.input, &sentences(60, 9999));
    let mut host = app.start();
    let input = read_all(&app.input);
    wait_until_checkpointed_to_end(&app, &input, Duration::from_secs(120));
    assert!(host.is_running(), "{}", host.log_text());
    let (status, log) = host.stop();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("was hot-swapped for"), "the restart says it runs the swapped-in module:\n{log}");
    let versions = assert_each_record_once_in_order(&input, &read_all(&app.output));
    assert!(versions.values().all(|(v1, _)| *v1 > 0), "{versions:?}");
    assert_state_counts(&app, &input, &sha256(&v2));
}

#[test]
fn swap_under_load_exactly_once_gives_every_record_one_output_from_one_version() {
    swap_under_load("exactly_once");
}

#[test]
fn swap_under_load_at_least_once_gives_every_record_one_output_from_one_version() {
    swap_under_load("at_least_once");
}

#[test]
fn failed_swaps_leave_v1_running_with_nothing_lost_or_repeated() {
    // State changes sent ahead of a checkpoint that a rollback discards are
    // restated in the changelog.
    let app = App::new(
        "swap-rollback",
        2,
        &guest("swap_v1"),
        "commit.interval.ms = 300\nstatestore.changelog.ahead.bytes = 1",
    );
    let not_a_component = app.dir.path().join("not-a-component.wasm");
    std::fs::write(&not_a_component, b"\0asm but not really").expect("write");
    let feeder = Feeder::start(&app.input, 20, 12000);
    let mut host = app.start();
    wait_for_admin(&app, &mut host);
    wait_for_outputs(&app, 50, &mut host);
    let v1 = sha256(&guest("swap_v1"));
    let attempts = [
        (not_a_component, "not a valid WebAssembly component"),
        (guest("swap_v2_fail_init"), "v2 refuses to start"),
        (guest("swap_v2_fail_restore"), "v2 cannot read this snapshot"),
        (guest("swap_v2_fail_first_record"), "failed its first batch"),
    ];
    for (module, why) in &attempts {
        let before = read_all(&app.output).len();
        let (ok, said) = swap(&app, module);
        assert!(!ok, "swapping in {} succeeded: {said}", module.display());
        assert!(said.contains("rolled back") && said.contains(why), "{}: {said}", module.display());
        // v1 goes on processing.
        wait_for_outputs(&app, before + 20, &mut host);
    }
    let (input, log) = stop_at_end_of_input(&app, feeder, host);
    assert_eq!(log.matches("hot swap rolled back").count(), 4, "{log}");

    let versions = assert_each_record_once_in_order(&input, &read_all(&app.output));
    assert!(versions.values().all(|(_, v2)| *v2 == 0), "no v2 output survives a rollback: {versions:?}");
    assert_state_counts(&app, &input, &v1);
    assert!(!app.app_state_dir().join("swapped-module.json").exists(), "a rolled-back swap is not recorded");
}

#[test]
fn processor_watch_swaps_in_a_module_renamed_over_the_configured_one() {
    let modules = tempfile::tempdir().expect("tempdir");
    let module = modules.path().join("processor.wasm");
    std::fs::copy(guest("swap_v1"), &module).expect("copy v1");
    let app = App::new("swap-watch", 2, &module, "commit.interval.ms = 300");
    let text = std::fs::read_to_string(&app.config).expect("config");
    std::fs::write(&app.config, text.replace("[processor]\n", "[processor]\nwatch = true\n")).expect("config");
    let feeder = Feeder::start(&app.input, 20, 15000);
    let mut host = app.start();
    wait_for_outputs(&app, 50, &mut host);
    // A new version arrives the safe way: written beside it, renamed over it.
    let tmp = modules.path().join("processor.wasm.tmp");
    std::fs::copy(guest("swap_v2"), &tmp).expect("copy v2");
    std::fs::rename(&tmp, &module).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !host.log_text().contains("hot swap completed") {
        assert!(Instant::now() < deadline, "no swap 60 s after the rename:\n{}", host.log_text());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (input, log) = stop_at_end_of_input(&app, feeder, host);
    assert!(log.contains("processor.watch: "), "{log}");
    let versions = assert_each_record_once_in_order(&input, &read_all(&app.output));
    assert!(versions.values().any(|(_, v2)| *v2 > 0), "v2 ran: {versions:?}");
    assert_state_counts(&app, &input, &sha256(&module));
    // processor.module is the new version itself: nothing to record.
    assert!(!app.app_state_dir().join("swapped-module.json").exists());
}

#[test]
fn a_restart_on_a_new_processor_module_migrates_the_old_snapshot() {
    let v1 = guest("swap_v1");
    let v2 = guest("swap_v2");
    let app = App::new("swap-upgrade", 2, &v1, "commit.interval.ms = 300");
    produce(&app.input, &sentences(80, 21000));
    let host = app.start();
    wait_until_checkpointed_to_end(&app, &read_all(&app.input), Duration::from_secs(120));
    let (status, log) = host.stop();
    assert!(status.success(), "{status}\n{log}");

    // An upgrade the usual way: the config names v2, the host restarts.
    let text = std::fs::read_to_string(&app.config).expect("config");
    let text = text.replace(&v1.display().to_string(), &v2.display().to_string());
    std::fs::write(&app.config, text).expect("config");
    produce(&app.input, &sentences(80, 22000));
    let host = app.start();
    let input = read_all(&app.input);
    wait_until_checkpointed_to_end(&app, &input, Duration::from_secs(120));
    let (status, log) = host.stop();
    assert!(status.success(), "{status}\n{log}");
    assert!(log.contains("restoring it into"), "the restart says the checkpoint is another module's:\n{log}");
    let versions = assert_each_record_once_in_order(&input, &read_all(&app.output));
    assert!(versions.values().all(|(v1, v2)| *v1 > 0 && *v2 > 0), "{versions:?}");
    assert_state_counts(&app, &input, &sha256(&v2));
}

#[test]
fn state_written_in_init_and_restore_survives_a_rollback_and_a_stop() {
    // The typed guest writes state outside any record: in `init`, and in
    // `restore` when the snapshot comes from another module (a migration).
    // The host checkpoints those writes like a record's.
    let a = guest("typed_guest");
    let app = App::new("swap-migration", 2, &a, "commit.interval.ms = 600000");
    let text = std::fs::read_to_string(&app.config).expect("config");
    let text = format!("{text}\n[processor.config]\ninit-put = \"started=yes\"\nmigrate-put = \"migrated=yes\"\n");
    std::fs::write(&app.config, text).expect("config");
    // B: the same code, another digest (a custom section named "b" appended).
    let b = app.dir.path().join("typed-b.wasm");
    let mut bytes = std::fs::read(&a).expect("read the typed guest");
    bytes.extend_from_slice(&[0, 2, 1, b'b']);
    std::fs::write(&b, bytes).expect("write B");

    // Records reach task 0 only: task 1's state is what init and restore wrote.
    let records: Vec<(String, String)> = (0..5).map(|i| (format!("k{i}"), format!("v{i}"))).collect();
    produce_to(&app.input, Some(0), records.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
    let mut host = app.start();
    wait_for_admin(&app, &mut host);
    wait_for_outputs(&app, 5, &mut host);
    // A record for B's first batch, which confirms the swap.
    let trial = {
        let input = app.input.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            produce_to(&input, Some(0), [(&b"k5"[..], &b"v5"[..])]);
        })
    };
    let (ok, said) = swap(&app, &b);
    trial.join().expect("trial record");
    assert!(ok, "swapping in B: {said}");
    // A swap that fails after its checkpoint's cut goes back to B at that cut.
    let (ok, said) = swap(&app, &guest("swap_v2_fail_restore"));
    assert!(!ok && said.contains("rolled back"), "{said}");
    let (status, log) = host.stop();
    assert!(status.success(), "{status}\n{log}");

    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    for t in app.checkpoints() {
        let state: BTreeMap<String, String> = t.state.iter().map(|(k, v)| (text(k), text(v))).collect();
        for key in ["started", "migrated"] {
            assert_eq!(
                state.get(key).map(String::as_str),
                Some("yes"),
                "task {}, {key}: {state:?}\n{log}",
                t.partition
            );
        }
    }
}
