//! TAXII paging benchmark against a release server: fills the inbox collection through TAXII
//! (POST, 10,000 objects per request), then pages through it with `limit=1000` following `next`
//! like a client does (every page parsed), printing objects/s; then grows the collection to
//! 1,000,000 objects and prints the p50/p99 latency of one page over a full pass.
//!
//!     cargo bench --bench taxii
//!     BENCH_SMALL=100000 BENCH_LARGE=1000000 BENCH_RUNS=3 cargo bench --bench taxii
//!
//! `BENCH_STORES` (default `local,distributed`): SQLite, then PostgreSQL + Garage, in one run.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::Instant;

use common::{Stores, TestServer, bench_stores};
use serde_json::{Value, json};

const TAXII: &str = "application/taxii+json;version=2.1";

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().expect(name))
        .unwrap_or(default)
}

fn indicator(i: usize) -> Value {
    json!({
        "type": "indicator", "spec_version": "2.1",
        "id": format!("indicator--{}", uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("bench-{i}").as_bytes())),
        "created": "2024-01-01T00:00:00.000Z", "modified": "2024-01-01T00:00:00.000Z",
        "name": format!("bench indicator {i}"),
        "pattern": format!("[ipv4-addr:value = '10.{}.{}.{}']", i % 250, (i / 250) % 250, i % 200),
        "pattern_type": "stix", "valid_from": "2024-01-01T00:00:00Z"
    })
}

struct Bench {
    server: TestServer,
    token: String,
    collection: String,
    client: reqwest::blocking::Client,
    _tmp: tempfile::TempDir,
}

impl Bench {
    fn fill(&self, from: usize, to: usize) -> f64 {
        let start = Instant::now();
        let mut i = from;
        while i < to {
            let end = (i + 10_000).min(to);
            let objects: Vec<Value> = (i..end).map(indicator).collect();
            let resp = self
                .client
                .post(self.server.url(&format!(
                    "/taxii2/api/collections/{}/objects/",
                    self.collection
                )))
                .basic_auth("bench", Some(&self.token))
                .header("accept", TAXII)
                .header("content-type", TAXII)
                .body(json!({"objects": objects}).to_string())
                .send()
                .unwrap();
            assert_eq!(resp.status(), 202, "{}", resp.text().unwrap_or_default());
            let status: Value = resp.json().unwrap();
            assert_eq!(status["success_count"].as_u64().unwrap() as usize, end - i);
            i = end;
        }
        (to - from) as f64 / start.elapsed().as_secs_f64()
    }

    /// Pages through the whole collection; returns (objects, seconds, page latencies in ms).
    fn page_all(&self) -> (usize, f64, Vec<f64>) {
        let start = Instant::now();
        let mut next: Option<String> = None;
        let mut count = 0;
        let mut latencies = Vec::new();
        loop {
            let mut url = format!(
                "{}?limit=1000",
                self.server.url(&format!(
                    "/taxii2/api/collections/{}/objects/",
                    self.collection
                ))
            );
            if let Some(n) = &next {
                url.push_str(&format!("&next={n}"));
            }
            let t = Instant::now();
            let resp = self
                .client
                .get(url)
                .basic_auth("bench", Some(&self.token))
                .header("accept", TAXII)
                .send()
                .unwrap();
            assert_eq!(resp.status(), 200);
            let page: Value = resp.json().unwrap();
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            count += page["objects"].as_array().map_or(0, Vec::len);
            match page["next"].as_str() {
                Some(n) if page["more"] == true => next = Some(n.to_string()),
                _ => break,
            }
        }
        latencies.sort_by(f64::total_cmp);
        (count, start.elapsed().as_secs_f64(), latencies)
    }
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let small = env_num("BENCH_SMALL", 100_000);
    let large = env_num("BENCH_LARGE", 1_000_000);
    let runs = env_num("BENCH_RUNS", 3);
    for store_name in bench_stores() {
        run_on(&Stores::named(&store_name), small, large, runs);
    }
}

fn run_on(stores: &Stores, small: usize, large: usize, runs: usize) {
    let label = stores.name();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let token = stores.users_ok(&dir, &["add", "bench"]);
    stores.users_ok(&dir, &["grant", "bench", "--write", "all"]);
    let server = stores.start_in(&dir, &[]);
    let collections: Value = reqwest::blocking::Client::new()
        .get(server.url("/taxii2/api/collections/"))
        .basic_auth("bench", Some(&token))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let collection = collections["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["can_write"] == true)
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = Bench {
        server,
        token,
        collection,
        client: reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .unwrap(),
        _tmp: tmp,
    };
    let rate = b.fill(0, small);
    println!("{label}: filled {small} objects through TAXII POST at {rate:.0} objects/s");
    let mut speeds = Vec::new();
    for r in 1..=runs {
        let (count, secs, lat) = b.page_all();
        assert_eq!(count, small);
        let speed = count as f64 / secs;
        println!(
            "{label} run {r}: paged {count} objects (limit 1000) in {secs:.2} s = {speed:.0} objects/s; page p50 {:.1} ms, p99 {:.1} ms",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
        speeds.push(speed);
    }
    speeds.sort_by(f64::total_cmp);
    println!(
        "taxii {small} on {label}: median {:.0} objects/s (range {:.0}-{:.0})",
        speeds[speeds.len() / 2],
        speeds[0],
        speeds[speeds.len() - 1]
    );
    if large > small {
        let rate = b.fill(small, large);
        println!("{label}: grew the collection to {large} objects at {rate:.0} objects/s");
        let (count, secs, lat) = b.page_all();
        assert_eq!(count, large);
        println!(
            "taxii {large} on {label}: full pass in {secs:.1} s ({:.0} objects/s); one page: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server peak RSS {:.0} MiB",
            count as f64 / secs,
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat[lat.len() - 1],
            b.server.peak_rss_mib()
        );
    }
}
