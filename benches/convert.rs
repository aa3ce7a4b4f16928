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
//!
//! Each run also measures the TAXII lag: the time from the conversion's end (progress 100) to
//! its last file's objects being readable in the datasets collection. `BENCH_STORES` (default
//! `local,distributed`) runs everything on SQLite + the data directory, then on PostgreSQL +
//! Garage (private servers the bench starts), in one run. `BENCH_TAXII_PASS=N` then pages N times
//! through the datasets collection (objects served from the STIX files) and prints the page
//! latency's p50 and p99.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Stores, TestServer, bench_stores, datasets};
use serde_json::{Value, json};

const TAXII: &str = "application/taxii+json;version=2.1";

/// The id of the datasets collection in an answer to `GET collections/`.
fn datasets_collection(collections: &Value) -> String {
    collections["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["title"] == "br-cti datasets")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Seconds from now until the last object of the conversion's last file is readable over
/// TAXII (the publisher adds a file's objects in one transaction, files in order).
fn taxii_lag(server: &TestServer, hash: &str, token: &str) -> f64 {
    let start = Instant::now();
    let records = server.stix_records(hash);
    let last = records
        .iter()
        .max_by_key(|r| r["batch"].as_u64().unwrap())
        .expect("records");
    let bytes = server.stix_file(hash, last["stix_file_hash"].as_str().unwrap());
    let line = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap()
        .to_string();
    let id = serde_json::from_str::<Value>(&line).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let get = |path: &str| -> Value {
        server
            .client
            .get(server.url(path))
            .basic_auth("bench", Some(token))
            .header("accept", TAXII)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let datasets = datasets_collection(&get("/taxii2/api/collections/"));
    loop {
        let v = get(&format!(
            "/taxii2/api/collections/{datasets}/objects/?match[id]={id}&match[version]=all"
        ));
        if v["objects"].as_array().is_some_and(|o| !o.is_empty()) {
            return start.elapsed().as_secs_f64();
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "not published after 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// With `BENCH_TAXII_PASS=N`: one of the N passes over the datasets collection once everything is
/// published, `limit=1000` following `next` (every page parsed), as a client pages it. The
/// datasets' objects are served from their STIX files, so this measures those reads. Prints
/// the objects, objects/s and the p50/p99 of one page.
fn taxii_pass(server: &TestServer, token: &str) -> String {
    let collections: Value = server
        .client
        .get(server.url("/taxii2/api/collections/"))
        .basic_auth("bench", Some(token))
        .header("accept", TAXII)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let datasets = datasets_collection(&collections);
    let mut latencies = Vec::new();
    let mut objects = 0usize;
    let mut next: Option<String> = None;
    let start = Instant::now();
    loop {
        let mut path = format!("/taxii2/api/collections/{datasets}/objects/?limit=1000");
        if let Some(n) = &next {
            path.push_str(&format!("&next={n}"));
        }
        let t = Instant::now();
        let response = server
            .client
            .get(server.url(&path))
            .basic_auth("bench", Some(token))
            .header("accept", TAXII)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let page: Value = response.json().unwrap();
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        objects += page["objects"].as_array().map_or(0, Vec::len);
        match page["next"].as_str() {
            Some(n) if page["more"] == true => next = Some(n.to_string()),
            _ => break,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    format!(
        "TAXII pass over the datasets: {objects} objects in {} pages, {:.0} objects/s, page p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        objects as f64 / secs,
        at(0.5),
        at(0.99)
    )
}

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
    let passes: usize = env_str("BENCH_TAXII_PASS", "0")
        .parse()
        .expect("BENCH_TAXII_PASS");
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data");
    for store_name in bench_stores() {
        for format in formats.split(',') {
            datasets::generate_into(&data, rows, &[format]);
            let name = datasets::file_name(format, rows);
            let bytes = std::fs::read(data.join(&name)).expect("dataset");
            let mut speeds = Vec::new();
            let mut rss = Vec::new();
            let mut cpu = Vec::new();
            let mut finished = Vec::new();
            let mut lags = Vec::new();
            let mut label = String::new();
            for run in 1..=runs {
                let stores = Stores::named(&store_name);
                label = format!("{name} on {}", stores.name());
                let tmp = tempfile::tempdir().unwrap();
                let dir = tmp.path().join("data");
                std::fs::create_dir_all(&dir).unwrap();
                let token = stores.users_ok(&dir, &["add", "bench"]);
                stores.users_ok(&dir, &["grant", "bench", "--tlp", "red"]);
                let mut server = stores.start_in(
                    &dir,
                    &["--max-upload-bytes", &(bytes.len() as u64 + 1).to_string()],
                );
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
                let lag = taxii_lag(&server, &hash, &token);
                // The publisher's batches come after the conversion's peak.
                let peak_published = server.peak_rss_mib();
                println!(
                    "{label} run {run}: {rows} rows in {secs:.2} s = {rate:.0} rows/s ({:.0} objects/s, {} files), server peak RSS {peak:.1} MiB, server CPU {user:.2} s user + {sys:.2} s system ({cpu_per_row:.2} us/row); TAXII lag {lag:.1} s, server peak RSS by then {peak_published:.1} MiB",
                    done["objects"].as_f64().unwrap_or(0.0) / secs,
                    done["files"],
                );
                for _ in 0..passes {
                    println!("{label} run {run}: {}", taxii_pass(&server, &token));
                }
                lags.push(lag);
                cpu.push(cpu_per_row);
                speeds.push(rate);
                rss.push(peak);
                // Stopped, but its data directory is deleted only after the last run of this
                // format: on ext4 without a journal (as on our build machines) the inode allocator
                // skips inodes freed in the last minute, so deleting a run's 1,000 files right
                // before the next run would charge that run for the cleanup.
                server.kill();
                finished.push((server, tmp));
            }
            speeds.sort_by(f64::total_cmp);
            rss.sort_by(f64::total_cmp);
            cpu.sort_by(f64::total_cmp);
            lags.sort_by(f64::total_cmp);
            println!(
                "{label}: median {:.0} rows/s (range {:.0}-{:.0}) over {runs} runs, compress {compress}; peak RSS median {:.1} MiB (max {:.1}); server CPU median {:.2} us/row (range {:.2}-{:.2}); TAXII lag median {:.1} s (range {:.1}-{:.1})",
                speeds[speeds.len() / 2],
                speeds[0],
                speeds[speeds.len() - 1],
                rss[rss.len() / 2],
                rss[rss.len() - 1],
                cpu[cpu.len() / 2],
                cpu[0],
                cpu[cpu.len() - 1],
                lags[lags.len() / 2],
                lags[0],
                lags[lags.len() - 1],
            );
        }
    }
}
