//! The reference peer: Kafka Streams' word count (`benches/kafka-streams`,
//! Java, not part of wasmstream), run as a child process on the same broker
//! and input as ours, with the same guarantee and commit interval.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::kafka::Watermark;
use crate::throughput::Run;

/// The classpath of the built peer (`scripts/build-kafka-streams` builds it
/// when its sources changed).
fn classpath() -> anyhow::Result<String> {
    let out = Command::new("bash").arg("scripts/build-kafka-streams").stderr(Stdio::inherit()).output()?;
    anyhow::ensure!(out.status.success(), "scripts/build-kafka-streams failed (see above)");
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// Runs the peer over `input` until it processed `inputs` records, then
/// waits until a read_committed reader sees `outputs` records in `output`.
pub fn run(
    bootstrap: &str,
    input: &str,
    output: &str,
    guarantee: &str,
    interval_ms: u64,
    inputs: u64,
    outputs: i64,
) -> anyhow::Result<Run> {
    let state = tempfile::tempdir()?;
    let mut child = Command::new("java")
        .args(["-cp", &classpath()?, "dev.wasmstream.bench.WordCount"])
        .args(["--bootstrap", bootstrap, "--input", input, "--output", output])
        .args(["--application-id", output, "--state-dir"])
        .arg(state.path())
        .args(["--commit-interval-ms", &interval_ms.to_string(), "--guarantee", guarantee])
        .args(["--expect-records", &inputs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting java for the Kafka Streams peer: {e}"))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout from the Kafka Streams peer"))?;
    let mut seconds = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        // "processed N records in S.SSS s": first to last record, as ours.
        if let Some(rest) = line.strip_prefix("processed ") {
            seconds = rest.split(" in ").nth(1).and_then(|t| t.trim_end_matches(" s").parse::<f64>().ok());
        }
    }
    let processed_at = Instant::now();
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "the Kafka Streams peer exited with {status}");
    let seconds = seconds.ok_or_else(|| anyhow::anyhow!("the Kafka Streams peer did not report its time"))?;
    // It closes (and commits) before exiting: every output is visible by now,
    // or shortly after; the wait is reported like ours.
    let wm = Watermark::new(bootstrap, output)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while wm.high() < outputs {
        anyhow::ensure!(Instant::now() < deadline, "{output}: Kafka Streams' outputs never became visible");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Run { rate: inputs as f64 / seconds.max(1e-3), visible_after: processed_at.elapsed(), cpu_us: None })
}
