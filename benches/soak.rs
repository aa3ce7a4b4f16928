//! Soak benchmark: a release node under mixed load for a while (10 minutes by default):
//! dataset uploads and conversions, signed hidden-danger reports, TAXII and REST reads, the
//! STIX export, and hostile clients (bomb files, oversized and malformed bodies, stalled
//! connections) at the same time. Prints the node's resident memory over time, the requests and
//! errors of each kind, and checks that the node still answers (ready) afterwards.
//!
//! The conversions are paced (a pause between rounds) so that the output stays around a
//! gigabyte: the node has no delete, and at full speed ten minutes write some 50 GB.
//!
//!     cargo bench --bench soak
//!     BENCH_SOAK_SECS=120 BENCH_SOAK_ROWS=5000 BENCH_SOAK_PAUSE_MS=3000 BENCH_SOAK_DIR=/mnt/x cargo bench --bench soak

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{TestServer, sheet_xml, users_ok, xlsx_with};
use md5::{Digest, Md5};
use serde_json::{Value, json};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().expect(name))
        .unwrap_or(default)
}

/// Requests and unexpected answers of each kind of load.
#[derive(Default)]
struct Tally {
    counts: Mutex<BTreeMap<&'static str, (u64, u64)>>,
    first_errors: Mutex<Vec<String>>,
}

impl Tally {
    fn note(&self, kind: &'static str, ok: bool, detail: impl FnOnce() -> String) {
        let mut c = self.counts.lock().unwrap();
        let e = c.entry(kind).or_default();
        e.0 += 1;
        if !ok {
            e.1 += 1;
            let mut first = self.first_errors.lock().unwrap();
            if first.len() < 10 {
                first.push(format!("{kind}: {}", detail()));
            }
        }
    }
}

fn dataset(round: u64, rows: u64) -> Vec<u8> {
    let mut csv = String::from("src,dst,Protocol,label\n");
    for i in 0..rows {
        let n = i + round * 7919;
        csv.push_str(&format!(
            "10.{}.{}.{},198.51.100.{},tcp,{}\n",
            n % 200,
            n / 200 % 250,
            n % 250,
            n % 250,
            i % 2
        ));
    }
    csv.into_bytes()
}

fn upload(client: &reqwest::blocking::Client, base: &str, bytes: Vec<u8>, name: &str) -> Value {
    let form = reqwest::blocking::multipart::Form::new()
        .text("task_id", format!("soak-{name}"))
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(bytes).file_name(name.to_string()),
        );
    client
        .post(format!("{base}/data/upload_file"))
        .multipart(form)
        .send()
        .and_then(|r| r.json())
        .unwrap_or(Value::Null)
}

fn post(client: &reqwest::blocking::Client, url: &str, body: &Value) -> Value {
    client
        .post(url)
        .json(body)
        .send()
        .and_then(|r| r.json())
        .unwrap_or(Value::Null)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let secs = env_num("BENCH_SOAK_SECS", 600);
    let rows = env_num("BENCH_SOAK_ROWS", 5_000);
    let pause = Duration::from_millis(env_num("BENCH_SOAK_PAUSE_MS", 3_000));
    let tmp = match std::env::var("BENCH_SOAK_DIR") {
        Ok(dir) => tempfile::tempdir_in(dir).unwrap(),
        Err(_) => tempfile::tempdir().unwrap(),
    };
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let token = users_ok(&dir, &["add", "soak"]);
    let server = TestServer::start_in(
        &dir,
        &["--taxii-anonymous", "--hd-rate", "50", "--hd-burst", "100"],
    );
    let base = server.base.clone();
    let pid = server.pid();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let converted_rows = Arc::new(AtomicU64::new(0));
    let reported = Arc::new(AtomicU64::new(0));
    let client = || {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap()
    };
    let mut workers = Vec::new();

    // Conversions: a new dataset each round, converted to the end, its records read.
    workers.push(std::thread::spawn({
        let (stop, tally, base, converted) = (
            stop.clone(),
            tally.clone(),
            base.clone(),
            converted_rows.clone(),
        );
        move || {
            let c = client();
            let mut round = 0;
            while !stop.load(Ordering::Relaxed) {
                round += 1;
                let v = upload(&c, &base, dataset(round, rows), &format!("d{round}.csv"));
                let Some(hash) = v["data"]["file_hash"].as_str().map(str::to_string) else {
                    tally.note("upload", false, || v.to_string());
                    std::thread::sleep(pause.max(Duration::from_millis(200)));
                    continue;
                };
                tally.note("upload", true, String::new);
                let v = post(
                    &c,
                    &format!("{base}/data/process_data_to_stix"),
                    &json!({"file_hash": hash, "stix_compress": 500}),
                );
                tally.note("convert start", v["code"] == 200, || v.to_string());
                loop {
                    std::thread::sleep(Duration::from_millis(200));
                    let p = post(
                        &c,
                        &format!("{base}/data/get_stix_process_progress"),
                        &json!({"file_hash": hash}),
                    );
                    if p["data"]["progress"] == 100 {
                        converted.fetch_add(rows, Ordering::Relaxed);
                        tally.note("conversion", true, String::new);
                        break;
                    }
                    if p["data"].is_null() {
                        tally.note("conversion", false, || p.to_string());
                        break;
                    }
                }
                let r = post(
                    &c,
                    &format!("{base}/data/get_local_stix_records"),
                    &json!({"file_hash": hash}),
                );
                tally.note(
                    "records",
                    r["data"]
                        .as_array()
                        .is_some_and(|a| a.len() as u64 == rows.div_ceil(500)),
                    || r.to_string().chars().take(200).collect(),
                );
                std::thread::sleep(pause);
            }
        }
    }));

    // Hidden-danger reports: batches of 100, signed, as fast as the rate limit lets them.
    workers.push(std::thread::spawn({
        let (stop, tally, base, reported) = (stop.clone(), tally.clone(), base.clone(), reported.clone());
        move || {
            let c = client();
            let url = format!("{base}/open/api/v1/retrieval/addHiddenDanger");
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let items: Vec<Value> = (0..100)
                    .map(|i| {
                        let k = n * 100 + i;
                        json!({"riskId": format!("soak-{}", k % 50_000), "issueName": format!("弱口令 {}", k % 97), "issueLevel": k % 5,
                            "issueIP": format!("10.{}.{}.{}", k % 200, k / 200 % 250, k % 250 + 1), "classify": ["主机漏洞"],
                            "unitName": format!("单位{}", k % 20), "startTime": "2024-06-01 08:00:00", "endTime": "2024-06-01 09:00:00",
                            "dataFrom": "下级平台", "judgeState": "judgeStateTrue", "noticeState": "noticeStateNone",
                            "rawEvent": format!("{{\"n\":{k}}}")})
                    })
                    .collect();
                let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64 + n;
                let sign = hex::encode(Md5::digest(format!("{ts}soak{token}").as_bytes()));
                let v = post(&c, &url, &json!({"user": "soak", "timestamp": ts, "sign": sign, "dataValues": items}));
                let ok = v["success"] == true || v["errorCode"] == "RATE_LIMITED";
                if v["success"] == true {
                    reported.fetch_add(100, Ordering::Relaxed);
                }
                tally.note("report", ok, || v.to_string().chars().take(200).collect());
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }));

    // Readers: TAXII pages, REST lists, and now and then the whole STIX export.
    workers.push(std::thread::spawn({
        let (stop, tally, base) = (stop.clone(), tally.clone(), base.clone());
        move || {
            let c = client();
            let collections: Value = c
                .get(format!("{base}/taxii2/api/collections/"))
                .header("accept", "application/taxii+json;version=2.1")
                .send()
                .and_then(|r| r.json())
                .unwrap_or(Value::Null);
            let ids: Vec<String> = collections["collections"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| c["can_read"] == true)
                .filter_map(|c| c["id"].as_str().map(str::to_string))
                .collect();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                for id in &ids {
                    let r = c
                        .get(format!(
                            "{base}/taxii2/api/collections/{id}/objects/?limit=200"
                        ))
                        .header("accept", "application/taxii+json;version=2.1")
                        .send();
                    let ok = r.as_ref().is_ok_and(|r| r.status() == 200);
                    tally.note("taxii page", ok, || format!("{:?}", r.map(|r| r.status())));
                }
                let r = c
                    .get(format!("{base}/api/v1/hidden-dangers?page_size=100&page=3"))
                    .send();
                tally.note(
                    "rest page",
                    r.as_ref().is_ok_and(|r| r.status() == 200),
                    || format!("{:?}", r.map(|r| r.status())),
                );
                if i.is_multiple_of(60) {
                    let r = c
                        .get(format!("{base}/api/v1/hidden-dangers/stix"))
                        .send()
                        .and_then(|r| r.bytes());
                    tally.note(
                        "stix export",
                        r.as_ref()
                            .is_ok_and(|b| b.starts_with(b"{\"type\":\"bundle\"")),
                        || format!("{:?}", r.map(|b| b.len())),
                    );
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }));

    // Hostile clients: bombs, oversized and malformed bodies, stalled connections.
    workers.push(std::thread::spawn({
        let (stop, tally, base) = (stop.clone(), tally.clone(), base.clone());
        move || {
            let c = client();
            let bomb = xlsx_with(
                &sheet_xml(r#"<row r="1"><c r="A1" t="s"><v>0</v></c></row>"#),
                Some(br#"<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" uniqueCount="1000000000000"><si><t>x</t></si></sst>"#),
            );
            let bomb_hash = upload(&c, &base, bomb, "bomb.xlsx")["data"]["file_hash"].as_str().unwrap_or_default().to_string();
            let addr = base.trim_start_matches("http://").to_string();
            let mut stalled = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let v = post(&c, &format!("{base}/data/get_traffic_data_features"), &json!({"file_hash": bomb_hash}));
                tally.note("bomb features", v["code"] == 400, || v.to_string());
                let v = post(&c, &format!("{base}/data/process_data_to_stix"), &json!({"file_hash": bomb_hash}));
                tally.note("bomb convert", v["code"] == 400, || v.to_string());
                let r = c
                    .post(format!("{base}/open/api/v1/retrieval/addHiddenDanger"))
                    .header("content-type", "application/json")
                    .body(vec![b' '; 17 << 20])
                    .send();
                tally.note("oversized report", r.as_ref().is_ok_and(|r| r.status() == 413), || format!("{:?}", r.map(|r| r.status())));
                let r = c
                    .post(format!("{base}/open/api/v1/retrieval/addHiddenDanger"))
                    .header("content-type", "application/json")
                    .body("{\"user\": [[[[[[")
                    .send()
                    .and_then(|r| r.json::<Value>());
                tally.note("malformed report", r.as_ref().is_ok_and(|v| v["errorCode"] == "INVALID_JSON"), || format!("{r:?}"));
                // A connection that sends half a request and stops (kept for a while).
                if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
                    use std::io::Write;
                    let _ = s.write_all(b"POST /data/upload_file HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\npartial");
                    stalled.push(s);
                    if stalled.len() > 50 {
                        stalled.remove(0);
                    }
                }
                if i.is_multiple_of(10) {
                    std::thread::sleep(Duration::from_secs(1));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }));

    // Memory over time.
    let started = Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    while started.elapsed() < Duration::from_secs(secs) {
        samples.push((started.elapsed().as_secs_f64(), server.rss_mib()));
        std::thread::sleep(Duration::from_secs(5));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    samples.push((started.elapsed().as_secs_f64(), server.rss_mib()));

    println!("soak: {secs} s of mixed load on a release node");
    println!("  time (s)  RSS (MiB)");
    let step = (samples.len() / 12).max(1);
    for (t, rss) in samples.iter().step_by(step) {
        println!("  {t:8.0}  {rss:9.1}");
    }
    let mut rss: Vec<f64> = samples.iter().map(|s| s.1).collect();
    rss.sort_by(f64::total_cmp);
    println!(
        "  RSS median {:.1} MiB (range {:.1}-{:.1}); peak (VmHWM) {:.1} MiB; first minute {:.1}, last sample {:.1}",
        rss[rss.len() / 2],
        rss[0],
        rss[rss.len() - 1],
        server.peak_rss_mib(),
        samples.iter().take(12).map(|s| s.1).fold(0.0, f64::max),
        samples.last().unwrap().1
    );
    println!(
        "  rows converted {}, hidden dangers acknowledged {}",
        converted_rows.load(Ordering::Relaxed),
        reported.load(Ordering::Relaxed)
    );
    let mut errors = 0;
    for (kind, (n, bad)) in tally.counts.lock().unwrap().iter() {
        println!("  {kind:18} {n:7} requests, {bad} unexpected");
        errors += bad;
    }
    for e in tally.first_errors.lock().unwrap().iter() {
        println!("  unexpected: {e}");
    }
    let ready = reqwest::blocking::get(format!("{base}/readyz"))
        .and_then(|r| r.json::<Value>())
        .unwrap_or_else(|e| json!({"request": e.to_string()}));
    println!("  afterwards: /readyz {ready}");
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    println!(
        "  afterwards: node process {}",
        if alive { "running" } else { "gone" }
    );
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(errors, 0, "unexpected answers under load");
}
