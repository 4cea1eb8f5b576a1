//! A bad configuration is one clear line on stderr, a non-zero exit, and
//! nothing written: no state directory, no Kafka connection.

use std::path::Path;
use std::process::Command;

use crate::support::guest;

/// Runs `wasmstream run` on `config` (in a fresh dir); returns (exit code,
/// stderr) after checking that nothing was written to `state.dir`.
fn run_config(config: &str, files: &[(&str, &[u8])]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("write file");
    }
    let state = dir.path().join("state");
    let text = config.replace("STATE", &state.display().to_string());
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, text).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_wasmstream"))
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .expect("run wasmstream");
    assert!(!state.exists(), "a bad config must write nothing, but {} exists", state.display());
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn config(extra_top: &str, module: &Path) -> String {
    format!(
        "application.id = \"bad\"\nbootstrap.servers = \"127.0.0.1:1\"\nstate.dir = \"STATE\"\n{extra_top}\n\
         [processor]\nmodule = \"{}\"\ninputs = [\"in\"]\noutputs = [\"out\"]\n",
        module.display()
    )
}

/// The error is exactly one line, starts with `error:` and contains `needle`.
fn assert_one_line(code: i32, stderr: &str, needle: &str) {
    assert_ne!(code, 0, "must exit non-zero; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(needle), "expected {needle:?} in: {stderr}");
}

#[test]
fn unknown_key_is_one_line_naming_key_and_closest_valid_one() {
    let (code, err) = run_config(&config("commit.interval = 100", &guest("wordcount")), &[]);
    assert_one_line(code, &err, "unknown key `commit.interval` (did you mean `commit.interval.ms`?)");
}

#[test]
fn bad_processing_guarantee_is_one_line_naming_key_and_choices() {
    let (code, err) = run_config(&config("processing.guarantee = \"exactly-once\"", &guest("wordcount")), &[]);
    assert_one_line(
        code,
        &err,
        "bad value \"exactly-once\" for `processing.guarantee`: expected one of at_least_once, exactly_once, none (did you mean `exactly_once`?)",
    );
}

#[test]
fn missing_module_file_is_one_line_naming_the_file() {
    let (code, err) = run_config(&config("", Path::new("nowhere/missing.wasm")), &[]);
    assert_one_line(code, &err, "`processor.module` = ");
    assert!(err.contains("nowhere/missing.wasm: no such file"), "{err}");
}

#[test]
fn module_that_is_not_a_component_is_one_line_naming_the_file() {
    // An empty core WebAssembly module: valid wasm, but not a component.
    let core = b"\0asm\x01\0\0\0";
    let (code, err) = run_config(&config("", Path::new("core.wasm")), &[("core.wasm", core)]);
    assert_one_line(code, &err, "core.wasm is not a valid WebAssembly component");
}

#[test]
fn component_of_another_world_is_one_line_naming_the_world() {
    // An empty component: it exports nothing, so not `process` either.
    let empty = b"\0asm\x0d\0\x01\0";
    let (code, err) = run_config(&config("", Path::new("other.wasm")), &[("other.wasm", empty)]);
    assert_one_line(
        code,
        &err,
        "other.wasm implements neither the wasmstream:processor/batch-processor@0.2.0 nor the wasmstream:processor/processor@0.2.0 world: as a batch-processor: no export `init` found",
    );
}
