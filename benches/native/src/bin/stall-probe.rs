//! How long the machine itself took a core away during a benchmark run.
//!
//! Run it pinned to one core and real-time, as `benches/run.sh` does
//! (`taskset -c 0 chrt -f 50 stall-probe --seconds 8`), so no ordinary
//! thread (the server under test, wrk) can delay it: it sleeps for
//! `--interval-us`, wakes, and notes how late it woke. A late wake-up means
//! nothing of the guest's ran on that core for that long: the hypervisor
//! ran another guest (steal), the kernel ran something that cannot be
//! preempted, or a kernel thread of higher priority ran. A server's request
//! that took as long at the same moment lost its core the same way; one
//! that took long while the probe woke on time was slow by itself.
//!
//! `benches/run.sh` runs one per core beside every measured run and prints,
//! per row, how many times each core stalled past `--threshold-us` and the
//! longest stall. With `--log FILE` it also writes each stall with its
//! wall-clock time, to line up against the server's request log.
//!
//! Cost: one wake-up per interval, a few µs each (under 0.5 % of a core at
//! the default 1 ms).

use anyhow::{Context as _, bail};
use clap::Parser;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
struct Args {
    /// How long to watch, in seconds.
    #[arg(long)]
    seconds: f64,
    /// What to call the watched core in the output (e.g. `server`, `wrk`).
    #[arg(long, default_value = "core")]
    label: String,
    /// How long each sleep is, in µs.
    #[arg(long, default_value_t = 1000)]
    interval_us: u64,
    /// A wake-up later than this (µs past the sleep's end) is a stall.
    #[arg(long, default_value_t = 2000)]
    threshold_us: u64,
    /// Also write every stall here: wall-clock µs since the epoch and µs late.
    #[arg(long)]
    log: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.seconds.is_nan() || args.seconds <= 0.0 || args.interval_us == 0 {
        bail!("--seconds and --interval-us must be positive");
    }
    let run_for = Duration::from_secs_f64(args.seconds);
    let interval = Duration::from_micros(args.interval_us);
    let threshold = Duration::from_micros(args.threshold_us);
    let (mut wakes, mut max_late, mut lost) = (0u64, Duration::ZERO, Duration::ZERO);
    let mut stalls: Vec<(u128, u128)> = Vec::new();
    let start = Instant::now();
    while start.elapsed() < run_for {
        let asleep = Instant::now();
        std::thread::sleep(interval);
        let late = asleep.elapsed().saturating_sub(interval);
        wakes += 1;
        max_late = max_late.max(late);
        if late > threshold {
            lost += late;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            stalls.push((now.as_micros(), late.as_micros()));
        }
    }
    // One line, `key=value`, for the harness to parse.
    println!(
        "STALLS {} wakes={wakes} stalls={} max_us={} lost_us={}",
        args.label,
        stalls.len(),
        max_late.as_micros(),
        lost.as_micros(),
    );
    if let Some(path) = &args.log {
        let mut log = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for (at, late) in &stalls {
            writeln!(log, "{at} {late}")?;
        }
        log.flush()?;
    }
    Ok(())
}
