//! The memory row: the `wasmstream` binary's resident set on 8 partitions.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::kafka::{Watermark, create_topic};
use crate::throughput::{Args, config_text, kv, unique};

/// The memory row: the `wasmstream` binary (a child process, as users run
/// it) on an 8-partition input fed at a steady rate, its resident set
/// sampled every second from /proc.
pub(crate) struct RssRun {
    pub(crate) seconds: u64,
    pub(crate) rate: u64,
    /// The window the first and last figures average over.
    pub(crate) window: u64,
    pub(crate) peak_mib: f64,
    pub(crate) first_mib: f64,
    pub(crate) last_mib: f64,
}

pub(crate) fn rss_run(args: &Args, bootstrap: &str, dir: &std::path::Path) -> anyhow::Result<RssRun> {
    use std::sync::atomic::AtomicBool;
    let input = unique("rss-in");
    let out = unique("rss-out");
    create_topic(bootstrap, &input, 8)?;
    create_topic(bootstrap, &out, 8)?;
    let file = dir.join(format!("{}.toml", unique("rss")));
    std::fs::write(&file, config_text(args, "uppercase", "at_least_once", 30_000, &input, &out, dir))?;
    let binary = std::env::current_exe()?.with_file_name("wasmstream");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release -p wasmstream`",
        binary.display()
    );
    let log = dir.join(format!("{}.log", unique("rss")));
    let mut child = std::process::Command::new(&binary)
        .args(["run", "--config"])
        .arg(&file)
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(&log)?.try_clone()?)
        .spawn()?;
    let pid = child.id();
    let rss_mib = || -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
        Ok(kb / 1024.0)
    };
    let stop = AtomicBool::new(false);
    let seconds = args.rss_seconds.max(10);
    let rate = args.rss_rate.max(1);
    let samples = std::thread::scope(|s| -> anyhow::Result<Vec<f64>> {
        // The feeder: `rate` records/s in 10 ms steps, round-robin over the partitions.
        let feeder = s.spawn(|| -> anyhow::Result<u64> {
            let producer: BaseProducer =
                ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "5").create()?;
            let started = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    let (k, v) = kv(sent as usize);
                    let record = BaseRecord::to(&input).key(&k).payload(&v).partition((sent % 8) as i32);
                    if producer.send(record).is_err() {
                        producer.poll(Duration::from_millis(5));
                        continue;
                    }
                    sent += 1;
                }
                producer.poll(Duration::from_millis(10));
            }
            producer.flush(Duration::from_secs(30))?;
            Ok(sent)
        });
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < Duration::from_secs(seconds) {
            std::thread::sleep(Duration::from_secs(1));
            if let Some(status) = child.try_wait()? {
                stop.store(true, Ordering::Relaxed);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                anyhow::bail!(
                    "wasmstream exited early ({status}); the end of its log:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            samples.push(rss_mib()?);
        }
        stop.store(true, Ordering::Relaxed);
        let sent = feeder.join().map_err(|_| anyhow::anyhow!("feeder panicked"))??;
        // It kept up: every record fed is output (the map emits one each).
        let outputs = Watermark::new(bootstrap, &out)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let output = || (0..8).map(|p| outputs.high_of(p)).sum::<i64>() as u64;
        while output() < sent {
            anyhow::ensure!(
                Instant::now() < deadline,
                "wasmstream output {} of {sent} records; log: {}",
                output(),
                log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("bench: rss-8p: fed {sent} records in {seconds} s, all of them output");
        Ok(samples)
    })?;
    // A graceful stop: SIGTERM, then its final checkpoint.
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "wasmstream exited with {status}; its log: {}", log.display());
    // The first window is start-up (module compile, group join): the
    // comparison starts after it.
    let window = (seconds / 10).clamp(5, 60) as usize;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok(RssRun {
        seconds,
        rate,
        window: window as u64,
        peak_mib: samples.iter().copied().fold(0.0, f64::max),
        first_mib: mean(&samples[window.min(samples.len())..(2 * window).min(samples.len())]),
        last_mib: mean(&samples[samples.len().saturating_sub(window)..]),
    })
}
