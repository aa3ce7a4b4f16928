//! Conversion benchmark, end to end through a real release server: upload a generated dataset,
//! start `process_data_to_stix`, and time from that request to the last record committed
//! (progress 100). Prints rows/s and the server's peak RSS (VmHWM) per run, then the median
//! and range.
//!
//!     cargo bench --bench convert
//!     BENCH_ROWS=1000000 BENCH_FORMATS=csv,jsonl,xlsx BENCH_COMPRESS=1000 BENCH_RUNS=3 cargo bench --bench convert
//!
//! `BENCH_STIX_TYPE` (default 1) and `BENCH_INDICATORS` (`none`, or unset for the type's rule)
//! measure the indicators: the honeypot data with type 2 makes one per public source.
//!
//! Datasets come from the test harness's deterministic generator (`tests/it/common/datasets.rs`)
//! and are cached in target/bench-data.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestServer, datasets};
use serde_json::json;

fn env_str(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rows: u64 = env_str("BENCH_ROWS", "1000000")
        .parse()
        .expect("BENCH_ROWS");
    let compress: u64 = env_str("BENCH_COMPRESS", "1000")
        .parse()
        .expect("BENCH_COMPRESS");
    let runs: usize = env_str("BENCH_RUNS", "3").parse().expect("BENCH_RUNS");
    // The dataset type (it decides which sources become indicators) and `stix_indicators`
    // (`none` turns them off; unset: the type's rule).
    let stix_type: u64 = env_str("BENCH_STIX_TYPE", "1")
        .parse()
        .expect("BENCH_STIX_TYPE");
    let indicators = std::env::var("BENCH_INDICATORS").ok();
    let formats = env_str("BENCH_FORMATS", "csv,jsonl,xlsx");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    for format in formats.split(',') {
        datasets::generate_into(&data, rows, &[format]);
        let name = datasets::file_name(format, rows);
        let bytes = std::fs::read(data.join(&name)).expect("dataset");
        let mut speeds = Vec::new();
        let mut rss = Vec::new();
        let mut cpu = Vec::new();
        let mut finished = Vec::new();
        for run in 1..=runs {
            let mut server = TestServer::start_process(&[
                "--max-upload-bytes",
                &(bytes.len() as u64 + 1).to_string(),
            ]);
            let hash = server.upload_ok(&bytes, &name);
            let cpu_before = server.cpu_seconds();
            let start = Instant::now();
            let mut request =
                json!({"file_hash": hash, "stix_compress": compress, "stix_type": stix_type});
            if let Some(indicators) = &indicators {
                request["stix_indicators"] = json!(indicators);
            }
            let v = server.start_stix(&request);
            assert_eq!(v["code"], 200, "{v}");
            let done = loop {
                let p = server.stix_progress(&hash);
                assert_eq!(p["code"], 200, "{p}");
                // A conversion that ended without finishing (a full disk, say) ends the bench.
                assert!(
                    !(p["data"].is_null() && p["status"].is_string()),
                    "the conversion ended unfinished: {p}"
                );
                if p["data"]["progress"] == 100 {
                    break p["data"].clone();
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            let secs = start.elapsed().as_secs_f64();
            let cpu_after = server.cpu_seconds();
            let (user, sys) = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
            let cpu_per_row = (user + sys) * 1e6 / rows as f64;
            assert_eq!(done["rows_done"], rows);
            let rate = rows as f64 / secs;
            let peak = server.peak_rss_mib();
            println!(
                "{name} run {run}: {rows} rows in {secs:.2} s = {rate:.0} rows/s ({:.0} objects/s, {} files), server peak RSS {peak:.1} MiB, server CPU {user:.2} s user + {sys:.2} s system ({cpu_per_row:.2} us/row)",
                done["objects"].as_f64().unwrap_or(0.0) / secs,
                done["files"],
            );
            cpu.push(cpu_per_row);
            speeds.push(rate);
            rss.push(peak);
            // Stopped, but its data directory is deleted only after the last run of this
            // format: on ext4 without a journal (as on our build machines) the inode allocator
            // skips inodes freed in the last minute, so deleting a run's 1,000 files right
            // before the next run would charge that run for the cleanup.
            server.kill();
            finished.push(server);
        }
        speeds.sort_by(f64::total_cmp);
        rss.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        println!(
            "{name}: median {:.0} rows/s (range {:.0}-{:.0}) over {runs} runs, compress {compress}; peak RSS median {:.1} MiB (max {:.1}); server CPU median {:.2} us/row (range {:.2}-{:.2})",
            speeds[speeds.len() / 2],
            speeds[0],
            speeds[speeds.len() - 1],
            rss[rss.len() / 2],
            rss[rss.len() - 1],
            cpu[cpu.len() / 2],
            cpu[0],
            cpu[cpu.len() - 1],
        );
    }
}
