//! The README's main command, `wasmstream demo` (what `scripts/demo` runs):
//! the word count on an in-process mock broker, two runs with a restart from
//! the checkpoint in between. It must keep working as the host changes.

use std::process::Command;

use crate::support::guest;

#[test]
fn demo_runs_both_runs_and_stops_cleanly() {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmstream"))
        .args(["demo", "--module"])
        .arg(guest("wordcount"))
        .env("RUST_LOG", "info")
        .output()
        .expect("run wasmstream demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo must exit 0: {}\n{stdout}\n{stderr}", out.status);
    assert!(
        stdout.contains("Done: both runs stopped cleanly; run 2 resumed at the checkpoint, and all"),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("restored checkpoint"), "run 2 restores the checkpoint of run 1:\n{stderr}");
}
