//! Hidden-danger ingest benchmark: signed batches of 500 valid items posted over loopback HTTP
//! to a release server by several concurrent clients; every answer is a durable
//! acknowledgement (the items are committed with synchronous=FULL before it is sent). Prints
//! items/s and the p50/p99 request latency per run, then the median and range.
//!
//!     cargo bench --bench hidden_danger
//!     BENCH_ITEMS=200000 BENCH_BATCH=500 BENCH_CLIENTS=4 BENCH_RUNS=3 cargo bench --bench hidden_danger
//!
//! `BENCH_STORES` (default `local,distributed`): SQLite, then PostgreSQL + Garage, in one run.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Stores, bench_stores};
use md5::{Digest, Md5};
use serde_json::{Value, json};

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().expect(name))
        .unwrap_or(default)
}

fn item(run: usize, n: usize) -> Value {
    json!({
        "riskId": format!("bench-{run}-{n}"), "issueName": format!("弱口令 {}", n % 97), "issueLevel": n % 5,
        "issueIP": format!("10.{}.{}.{}", n % 200, (n / 200) % 250, n % 250 + 1), "issuePort": 22,
        "classify": ["主机漏洞"], "issueDescription": "SSH 服务使用弱口令", "issueSolution": "修改口令并启用密钥登录",
        "unitName": format!("单位{}", n % 50), "assetIpv4": [format!("10.{}.{}.{}", n % 200, (n / 200) % 250, n % 250 + 1)],
        "assetMac": ["00:1a:2b:3c:4d:5e"], "startTime": "2024-06-01 08:00:00", "endTime": "2024-06-01 09:00:00",
        "discoverFactory": "扫描器", "eventFrom": "巡检", "dataFrom": "下级平台", "judgeState": "judgeStateTrue",
        "noticeState": "noticeStateNone",
        "rawEvent": format!("{{\"plugin\":\"ssh_weak_password\",\"host\":\"10.0.{}.{}\",\"evidence\":\"root:123456\"}}", n % 250, n % 200)
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let total = env_num("BENCH_ITEMS", 200_000);
    let batch = env_num("BENCH_BATCH", 500);
    let clients = env_num("BENCH_CLIENTS", 4);
    let runs = env_num("BENCH_RUNS", 3);
    let batches = total.div_ceil(batch);
    for store_name in bench_stores() {
        let mut rates = Vec::new();
        let mut label = "";
        for run in 1..=runs {
            let stores = Stores::named(&store_name);
            label = stores.name();
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("data");
            std::fs::create_dir_all(&dir).unwrap();
            let token = stores.users_ok(&dir, &["add", "bench"]);
            let server = stores.start_in(&dir, &["--hd-rate", "0"]);
            // Bodies are built (and signed) as the clients go; timestamps are unique milliseconds.
            let next = Arc::new(AtomicUsize::new(0));
            let base_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as usize;
            let start = Instant::now();
            let handles: Vec<_> = (0..clients)
            .map(|_| {
                let next = next.clone();
                let url = server.url("/open/api/v1/retrieval/addHiddenDanger");
                let token = token.clone();
                std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(60))
                        .build()
                        .unwrap();
                    let mut latencies = Vec::new();
                    loop {
                        let b = next.fetch_add(1, Ordering::SeqCst);
                        if b >= batches {
                            break latencies;
                        }
                        let items: Vec<Value> = (b * batch..((b + 1) * batch).min(total))
                            .map(|n| item(run, n))
                            .collect();
                        let ts = (base_ms + b).to_string();
                        let sign = hex::encode(Md5::digest(format!("{ts}bench{token}").as_bytes()));
                        let body = json!({"user": "bench", "timestamp": ts.parse::<u64>().unwrap(), "sign": sign, "dataValues": items})
                            .to_string();
                        let t = Instant::now();
                        let resp = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .unwrap();
                        let v: Value = resp.json().unwrap();
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                        assert_eq!(v["success"], true, "{v}");
                        assert_eq!(v["data"]["created"].as_u64().unwrap() as usize, items.len());
                    }
                })
            })
            .collect();
            let mut latencies: Vec<f64> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect();
            let secs = start.elapsed().as_secs_f64();
            latencies.sort_by(f64::total_cmp);
            let pct = |p: f64| {
                latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)]
            };
            let rate = total as f64 / secs;
            let stored = server.get_json("/api/v1/hidden-dangers?page_size=1");
            assert_eq!(stored["total"].as_u64().unwrap() as usize, total);
            println!(
                "{label} run {run}: {total} items in {batches} requests of {batch} ({clients} clients) in {secs:.2} s = {rate:.0} items/s; \
             latency p50 {:.1} ms, p99 {:.1} ms; server peak RSS {:.1} MiB",
                pct(0.50),
                pct(0.99),
                server.peak_rss_mib()
            );
            rates.push(rate);
        }
        rates.sort_by(f64::total_cmp);
        println!(
            "hidden_danger on {label}: median {:.0} items/s (range {:.0}-{:.0}) over {runs} runs",
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1]
        );
    }
}
