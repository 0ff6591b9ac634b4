//! The judge at scale (issue 12 "Scale, measured"; design §10): how long reading and judging
//! an events.jsonl of N message IDs takes, how much memory it peaks at, and how many bytes the
//! file holds per million messages. Not a timed test: it prints figures and says whether the
//! goal (10 million IDs in at most 10 s and 2 GB on this machine) held.
//!
//! The file is shaped like a real Kafka run's (field for field what the timeline writes; every
//! line is read back by `read_recorded`, so a shape the judge does not know fails the bench): a
//! `run_started`, one `produced` per ID over 8 partitions, `delivered_batch` events of 500
//! records (as offset ranges, as the proxy records batches the ledger names; with
//! `JUDGE_BENCH_WALKED=1`, as the records read one by one), one applied `effect` per ID (every
//! 1000th twice, so duplicates are found and explained), a `commit` request and response after every batch, a kill of the one
//! incarnation halfway with its restart, a `progress` and `run_ended`.
//!
//! Each size is judged in a child process of this bench (itself, with `--judge FILE`), so the
//! peak resident memory (VmHWM) is that of reading and judging alone; it is printed once read
//! (what the events themselves hold) and at the end. Knobs: JUDGE_BENCH_IDS (comma-separated
//! sizes, default "1000000,10000000"), JUDGE_BENCH_DIR (where the generated files go, default
//! the system temp dir; each is removed afterwards unless JUDGE_BENCH_KEEP is set, to profile
//! the child on it: `judge-<hash> --judge FILE`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use exactly::judge;
use exactly::timeline::read_recorded;

/// The goal for 10 million IDs (issue 12).
const GOAL_TIME: Duration = Duration::from_secs(10);
/// The goal's memory, in bytes: 2 GB read the stricter way (10^9 bytes a GB, not 2^30), as
/// the table prints it.
const GOAL_PEAK: u64 = 2_000_000_000;
const PARTITIONS: u64 = 8;
const BATCH: u64 = 500;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--judge") {
        judge_child(Path::new(&args[i + 1]));
        return;
    }
    let sizes: Vec<u64> = std::env::var("JUDGE_BENCH_IDS")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("JUDGE_BENCH_IDS: sizes as integers")
        })
        .collect();
    let dir = std::env::var("JUDGE_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    println!("judge at scale: read events.jsonl and judge it, in a child process per size");
    println!(
        "{:>12} {:>10} {:>14} {:>10} {:>10} {:>14} {:>12}  verdict",
        "IDs", "MB", "MB/1M msgs", "read s", "judge s", "peak read MB", "peak MB"
    );
    for n in sizes {
        let path = dir.join(format!("exactly-judge-bench-{n}.jsonl"));
        let bytes = generate(&path, n).expect("write the generated events file");
        let child = Command::new(std::env::current_exe().expect("own path"))
            .args(["--judge", path.to_str().expect("utf-8 temp path")])
            .output()
            .expect("run the judging child");
        if std::env::var_os("JUDGE_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_file(&path);
        }
        let out = String::from_utf8_lossy(&child.stdout);
        assert!(
            child.status.success(),
            "child failed: {out}{}",
            String::from_utf8_lossy(&child.stderr)
        );
        let f: Vec<&str> = out.split_whitespace().collect();
        let (read_s, judge_s, read_peak, peak): (f64, f64, u64, u64) = (
            f[0].parse().unwrap(),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
        );
        let mb = bytes as f64 / 1e6;
        println!(
            "{n:>12} {mb:>10.0} {:>14.0} {read_s:>10.2} {judge_s:>10.2} {:>14.0} {:>12.0}  {}",
            mb / (n as f64 / 1e6),
            read_peak as f64 / 1e6,
            peak as f64 / 1e6,
            f[4..].join(" ")
        );
        if n == 10_000_000 {
            let total = Duration::from_secs_f64(read_s + judge_s);
            println!(
                "goal (10M IDs in ≤ {GOAL_TIME:?} and ≤ 2 GB): time {} ({total:.1?}), memory {} ({:.2} GB)",
                if total <= GOAL_TIME { "met" } else { "NOT met" },
                if peak <= GOAL_PEAK { "met" } else { "NOT met" },
                peak as f64 / 1e9
            );
        }
    }
}

/// Reads and judges `path`, printing "read_s judge_s read_peak_bytes peak_bytes verdict
/// counts" (the peak once read: what the events themselves hold).
fn judge_child(path: &Path) {
    let start = Instant::now();
    let recorded = read_recorded(path).expect("the generated file reads back");
    let read = start.elapsed();
    let read_peak = peak_resident_bytes();
    let start = Instant::now();
    let judged = judge::judge(&recorded);
    let took = start.elapsed();
    println!(
        "{:.3} {:.3} {read_peak} {} {} (duplicated {}, lost {})",
        read.as_secs_f64(),
        took.as_secs_f64(),
        peak_resident_bytes(),
        judged.verdict,
        judged.counts.duplicated,
        judged.counts.lost
    );
}

/// VmHWM of this process, in bytes (Linux).
fn peak_resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Writes a run of `n` IDs shaped like a real one (see the module doc); returns its size.
fn generate(path: &Path, n: u64) -> std::io::Result<u64> {
    let run = "bench-20261130T200000-a1b2";
    let mut w = Lines::new(File::create(path)?);
    w.line(format_args!(
        r#""kind":"run_started","run":"{run}","plan":"bench","description":null,"broker":"kafka","mock_broker":false,"broker_address":"127.0.0.1:9092","topic":"orders-{run}","group":"billing-{run}","expect":"at-least-once","seed":1,"planned_faults":["kill: consumer when after: effect, nth: {}"],"messages":{n},"reproduce":"exactly run bench.yaml --seed 1""#,
        n / 2
    ))?;
    for i in 0..n {
        let (p, o) = (i % PARTITIONS, i / PARTITIONS);
        w.line(format_args!(
            r#""kind":"produced","id":"{run}-{i}","key_seq":1,"partition":{p},"offset":{o},"status":"acked""#
        ))?;
    }
    w.process(1, "started", None)?;
    let per_partition = n.div_ceil(PARTITIONS);
    let mut incarnation = 1;
    for first in (0..per_partition).step_by(BATCH as usize) {
        if incarnation == 1 && first >= per_partition / 2 {
            kill_and_restart(&mut w, n)?;
            incarnation = 2;
        }
        let last = (first + BATCH).min(per_partition);
        for p in 0..PARTITIONS {
            batch(&mut w, run, incarnation, p, first, last, n)?;
        }
    }
    w.line(format_args!(
        r#""kind":"progress","committed":{{{}}},"end":{{{}}}"#,
        offsets(n),
        offsets(n)
    ))?;
    w.line(format_args!(r#""kind":"run_ended","reason":"settled""#))?;
    w.out.flush()?;
    Ok(w.out.get_ref().metadata()?.len())
}

/// One partition's delivery of offsets `first..last`, its effects and its commit.
fn batch(
    w: &mut Lines,
    run: &str,
    inc: u32,
    p: u64,
    first: u64,
    last: u64,
    n: u64,
) -> std::io::Result<()> {
    let ids = |o: u64| o * PARTITIONS + p;
    let delivered: Vec<u64> = (first..last).filter(|&o| ids(o) < n).collect();
    let (Some(lo), Some(hi)) = (delivered.first(), delivered.last()) else {
        return Ok(());
    };
    if w.walked {
        let records: Vec<String> = delivered
            .iter()
            .map(|&o| format!(r#"[{o},"{run}-{}"]"#, ids(o)))
            .collect();
        w.line(format_args!(
            r#""kind":"delivered_batch","instance":0,"incarnation":{inc},"partition":{p},"records":[{}]"#,
            records.join(",")
        ))?;
    } else {
        w.line(format_args!(
            r#""kind":"delivered_batch","instance":0,"incarnation":{inc},"partition":{p},"ranges":[[{lo},{hi}]],"records":[]"#
        ))?;
    }
    for o in (first..last).filter(|&o| ids(o) < n) {
        let id = ids(o);
        let times = if id % 1000 == 0 { 2 } else { 1 };
        for _ in 0..times {
            w.line(format_args!(
                r#""kind":"effect","id":"{run}-{id}","instance":0,"incarnation":{inc},"outcome":"applied","sink":"http","attributed_by":"socket","pid":{}"#,
                1000 + inc
            ))?;
        }
    }
    for phase in ["request", "response"] {
        w.line(format_args!(
            r#""kind":"commit","instance":0,"incarnation":{inc},"group":"billing-{run}","member":"m-{inc}","generation":{inc},"offsets":[{{"topic":"orders-{run}","partition":{p},"offset":{last}}}],"phase":"{phase}""#
        ))?;
    }
    Ok(())
}

fn kill_and_restart(w: &mut Lines, n: u64) -> std::io::Result<()> {
    let t = w.t_us;
    w.line(format_args!(
        r#""kind":"fault","fault":0,"action":"kill","target":"consumer","trigger":"after: effect, nth: {}","matched_at_us":{t},"fired_at_us":{t},"trigger_latency_us":0,"applied":true,"detail":"SIGKILL consumer[0] incarnation 1 (pid 1001)","hit":[{{"instance":0,"incarnation":1}}]"#,
        n / 2
    ))?;
    w.process(1, "exited", Some("signal SIGKILL"))?;
    w.process(2, "started", None)
}

fn offsets(n: u64) -> String {
    (0..PARTITIONS)
        .map(|p| format!(r#""{p}":{}"#, (n + PARTITIONS - 1 - p) / PARTITIONS))
        .collect::<Vec<_>>()
        .join(",")
}

/// A JSON-lines writer that stamps each line with the timeline's `seq` and `t_us`.
struct Lines {
    out: BufWriter<File>,
    /// Deliveries as the records the proxy read (`JUDGE_BENCH_WALKED=1`) rather than the
    /// offset ranges it records for batches the ledger names.
    walked: bool,
    seq: u64,
    t_us: u64,
}

impl Lines {
    fn new(file: File) -> Lines {
        Lines {
            out: BufWriter::with_capacity(1 << 20, file),
            walked: std::env::var_os("JUDGE_BENCH_WALKED").is_some_and(|v| v == "1"),
            seq: 0,
            t_us: 0,
        }
    }

    fn line(&mut self, body: std::fmt::Arguments) -> std::io::Result<()> {
        self.t_us += 7;
        writeln!(
            self.out,
            r#"{{"seq":{},"t_us":{},{body}}}"#,
            self.seq, self.t_us
        )?;
        self.seq += 1;
        Ok(())
    }

    fn process(
        &mut self,
        incarnation: u32,
        phase: &str,
        status: Option<&str>,
    ) -> std::io::Result<()> {
        let status = status.map_or(String::new(), |s| format!(r#","status":"{s}""#));
        self.line(format_args!(
            r#""kind":"process","instance":0,"incarnation":{incarnation},"pid":{},"phase":"{phase}"{status}"#,
            1000 + incarnation
        ))
    }
}
