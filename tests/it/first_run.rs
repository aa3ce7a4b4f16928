//! What the two existing front ends and a new user meet first: the connection check, the STIX
//! file window, failed jobs, record times, label columns, default points, binary files, the
//! CLI's first-run behaviour, and the README's quick start run as written.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

/// What Chrome sends when a page opens a URL in a window.
const NAVIGATION_ACCEPT: &str =
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8";
/// What axios sends (the Next.js viewer).
const AXIOS_ACCEPT: &str = "application/json, text/plain, */*";

fn converted_sample(server: &TestServer, body: Value) -> String {
    let bytes = std::fs::read(sample("honeypot-sample.jsonl")).unwrap();
    let hash = server.upload_ok(&bytes, "honeypot.jsonl");
    let mut body = body;
    body["file_hash"] = json!(hash);
    let v = server.start_stix(&body);
    assert_eq!(v["code"], 200, "{v}");
    server.wait_stix(&hash);
    hash
}

#[test]
fn the_stix_file_window_shows_text_and_downloads_on_request() {
    let server = TestServer::start(&[]);
    let hash = converted_sample(&server, json!({"stix_type": 2}));
    let records = server.stix_records(&hash);
    let stix = records[0]["stix_file_hash"].as_str().unwrap();
    let path = format!("/data/get_stix_file_content/{hash}/{stix}");
    let get = |query: &str, accept: Option<&str>| {
        let mut req = server.client.get(server.url(&format!("{path}{query}")));
        if let Some(a) = accept {
            req = req.header("accept", a);
        }
        let resp = req.send().unwrap();
        assert_eq!(resp.status(), 200);
        let h = |k: &str| {
            resp.headers()
                .get(k)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let (ct, cd, nosniff) = (
            h("content-type"),
            h("content-disposition"),
            h("x-content-type-options"),
        );
        (ct, cd, nosniff, resp.bytes().unwrap().to_vec())
    };
    // The jQuery page opens the URL in a window: the browser must show it.
    let (ct, cd, nosniff, shown) = get("", Some(NAVIGATION_ACCEPT));
    assert_eq!(ct, "text/plain; charset=utf-8");
    assert!(cd.starts_with("inline"), "{cd}");
    assert_eq!(nosniff, "nosniff");
    // The Next.js viewer (axios) and curl get JSON Lines, byte for byte the same.
    let (ct, _, _, axios) = get("", Some(AXIOS_ACCEPT));
    assert_eq!(ct, "application/jsonl; charset=utf-8");
    assert_eq!(axios, shown);
    let (ct, _, _, plain) = get("", None);
    assert_eq!(ct, "application/jsonl; charset=utf-8");
    assert_eq!(plain, shown);
    assert_eq!(sha256_hex(&plain), stix);
    // An explicit download, whatever the client.
    let (ct, cd, _, downloaded) = get("?download=1", Some(NAVIGATION_ACCEPT));
    assert_eq!(ct, "application/jsonl; charset=utf-8");
    assert_eq!(cd, format!("attachment; filename=\"{stix}.jsonl\""));
    assert_eq!(downloaded, shown);
    // The bundle: shown as JSON in a window, STIX media type otherwise.
    let (ct, _, _, bundle) = get("?format=bundle", Some(NAVIGATION_ACCEPT));
    assert_eq!(ct, "application/json; charset=utf-8");
    let bundle: Value = serde_json::from_slice(&bundle).unwrap();
    assert_eq!(bundle["type"], "bundle");
    let (ct, cd, _, _) = get("?format=bundle&download=true", None);
    assert_eq!(ct, "application/stix+json;version=2.1");
    assert_eq!(cd, format!("attachment; filename=\"{stix}.json\""));
    let v = server.get_json(&format!("{path}?download=yes"));
    assert_error(&v, "query `download`");
}

#[test]
fn a_failed_job_stops_both_pollers_and_says_why() {
    // The fault is made in the data directory's blob tree.
    let server = TestServer::start_sqlite(&[]);
    let csv = b"src,dst,Protocol\n10.0.0.1,10.0.0.2,tcp\n";
    let hash = server.upload_ok(csv, "flows.csv");
    // No progress yet: `data: null` with code 200, and a message saying so.
    let none = server.stix_progress(&hash);
    assert_eq!(none["code"], 200);
    assert!(none["data"].is_null());
    assert!(none["status"].is_null());
    assert!(
        none["msg"].as_str().unwrap().contains("was ever started"),
        "{none}"
    );
    // Make every STIX file fail to store: each blob prefix directory but the dataset's own
    // becomes a plain file (the output's hash prefix differs: the bytes are fixed).
    let blobs = server.data_dir.join("blobs");
    for i in 0..=255u8 {
        let prefix = format!("{i:02x}");
        if !hash.starts_with(&prefix) {
            std::fs::write(blobs.join(&prefix), b"").unwrap();
        }
    }
    assert_eq!(server.start_stix(&json!({"file_hash": hash}))["code"], 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ended = loop {
        let p = server.stix_progress(&hash);
        if !p["data"].is_object() {
            break p;
        }
        assert_ne!(
            p["data"]["progress"], 100,
            "the conversion cannot succeed: {p}"
        );
        assert!(std::time::Instant::now() < deadline, "{p}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_job_ended(&ended, "failed", "failed");
    // The task's step shows it too, and the same conversion can be started again.
    assert_eq!(server.start_stix(&json!({"file_hash": hash}))["code"], 200);
    // The CTI poller: never started is `data: null` with code 200.
    let cti = server.cti_progress(&hash);
    assert_eq!(cti["code"], 200);
    assert!(cti["data"].is_null());
}

/// `YYYY-mm-dd HH:MM:SS` → seconds since the epoch, read as UTC.
fn display_to_secs(s: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

#[test]
fn a_label_that_names_a_column_labels_each_row_with_its_value() {
    let server = TestServer::start(&[]);
    let bytes = std::fs::read(sample("honeypot-sample.jsonl")).unwrap();
    let expected: Vec<String> = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["attack"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // The 分类标签 select sends a column name; a value that names no column stays literal.
    let hash = converted_sample(
        &server,
        json!({"stix_type": 2, "stix_label": "attack;reviewed", "stix_compress": 100}),
    );
    let records = server.stix_records(&hash);
    let file = server.stix_file(&hash, records[0]["stix_file_hash"].as_str().unwrap());
    let labels: Vec<Value> = String::from_utf8(file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|o| o["type"] == "observed-data")
        .map(|o| o["labels"].clone())
        .collect();
    assert_eq!(labels.len(), expected.len());
    for (got, attack) in labels.iter().zip(&expected) {
        assert_eq!(got, &json!(["reviewed", attack]));
    }
}

#[test]
fn the_default_points_button_gets_the_nodes_default() {
    let server = TestServer::start(&["--default-points", "12.5"]);
    let v = server.post_json(
        "/data/get_default_points",
        &json!({"cti_type": 2, "incentive_mechanism": 1}),
    );
    assert_eq!(v["code"], 200, "{v}");
    assert_eq!(v["data"], 12.5);
    // The Next.js app may send the fields as strings, or none at all.
    let v = server.post_json(
        "/data/get_default_points",
        &json!({"cti_type": "5", "incentive_mechanism": ""}),
    );
    assert_eq!(v["data"], 12.5);
    assert_error(
        &server.post_json("/data/get_default_points", &json!({"cti_type": 9})),
        "field `cti_type`",
    );
    // A CTI build without `default_value` gets the same default.
    let hash = converted_sample(&server, json!({"stix_type": 2}));
    assert_eq!(server.start_cti(&json!({"file_hash": hash}))["code"], 200);
    server.wait_cti(&hash);
    for r in server.cti_records(&hash) {
        assert_eq!(r["value"], 12.5);
    }
}

/// A few bytes of well-known binary formats.
fn binaries() -> [(&'static str, Vec<u8>); 3] {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend(std::iter::repeat_n(7u8, 200));
    let mut elf = b"\x7fELF\x02\x01\x01\0".to_vec();
    elf.extend(std::iter::repeat_n(0u8, 100));
    let mut tiny_png = b"\x89PNG\r\n\x1a\n".to_vec();
    tiny_png.push(0);
    [
        ("PNG image", png),
        ("ELF executable", elf),
        ("PNG image", tiny_png),
    ]
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The ```sh blocks of a Markdown text that are meant to run (the info string does not say
/// `norun`), in order.
fn runnable_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    // Inside a fenced block: Some(whether it runs, its text).
    let mut current: Option<(bool, String)> = None;
    for line in markdown.lines() {
        if let Some(info) = line.strip_prefix("```") {
            match current.take() {
                Some((true, text)) => blocks.push(text),
                Some((false, _)) => {}
                None => {
                    let runs = info.starts_with("sh") && !info.contains("norun");
                    current = Some((runs, String::new()));
                }
            }
            continue;
        }
        if let Some((_, text)) = &mut current {
            text.push_str(line);
            text.push('\n');
        }
    }
    blocks
}

/// Tests of the real binary as a process (the slow stage).
mod process {
    use super::*;

    #[test]
    fn the_connection_check_and_the_operator_endpoints_answer() {
        let server = TestServer::start_process(&[]);
        // Both front ends: `HEAD /`, cross-origin.
        let head = server
            .client
            .head(server.url("/"))
            .header("origin", "http://localhost:3000")
            .send()
            .unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["access-control-allow-origin"], "*");
        let root = server.get_json("/");
        assert_eq!(root["code"], 200, "{root}");
        assert_eq!(root["data"]["name"], "br-cti");
        assert_eq!(root["data"]["version"], env!("CARGO_PKG_VERSION"));

        let health = server.get_json("/healthz");
        assert_eq!(health["status"], "alive");
        let resp = server.client.get(server.url("/readyz")).send().unwrap();
        assert_eq!(resp.status(), 200);
        let ready: Value = resp.json().unwrap();
        assert_eq!(ready["status"], "ready", "{ready}");
        assert_eq!(ready["checks"]["database"]["ok"], true);
        assert_eq!(ready["checks"]["blob_store"]["ok"], true);
        assert!(ready["checks"]["disk"]["free_bytes"].as_u64().unwrap() > 0);

        // A blob store that cannot be written makes the node not ready, and says why.
        let tmp = server.data_dir.join("tmp");
        std::fs::remove_dir_all(&tmp).unwrap();
        std::fs::write(&tmp, b"not a directory").unwrap();
        let resp = server.client.get(server.url("/readyz")).send().unwrap();
        assert_eq!(resp.status(), 503);
        let ready: Value = resp.json().unwrap();
        assert_eq!(ready["status"], "not ready");
        assert_eq!(ready["checks"]["blob_store"]["ok"], false, "{ready}");
        assert_eq!(ready["checks"]["database"]["ok"], true);
        // An upload then fails inside: the client learns what failed and an incident id, never
        // the cause (an OS error, a path), which is in the log under that id.
        let v = server.upload(b"src\n10.0.0.1\n", "a.csv", "t-broken");
        assert_eq!(v["code"], 500, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.starts_with("internal error while "), "{msg}");
        let id = msg
            .split("(incident ")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .unwrap_or_else(|| panic!("{msg}"));
        assert!(
            !msg.contains("os error") && !msg.contains(&*server.data_dir.to_string_lossy()),
            "{msg}"
        );
        let log = std::fs::read_to_string(server.data_dir.with_extension("log")).unwrap();
        assert!(
            log.lines().any(|l| l.contains(id) && l.contains("error")),
            "the log holds incident {id}"
        );
    }

    #[test]
    fn record_times_are_written_in_the_nodes_time_zone() {
        let server = TestServer::start(&["--time-zone", "Asia/Shanghai"]);
        let hash = converted_sample(&server, json!({"stix_type": 2}));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        for r in server.stix_records(&hash) {
            let shown = display_to_secs(r["create_time"].as_str().unwrap());
            let offset = shown - now;
            assert!(
                (8 * 3600 - 120..=8 * 3600 + 5).contains(&offset),
                "create_time {} is not Shanghai time (offset {offset} s)",
                r["create_time"]
            );
        }
        // A zone that does not exist is refused at start, naming the value.
        let tmp = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--time-zone",
                "Mars/Olympus",
            ])
            .arg("--data-dir")
            .arg(tmp.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("\"Mars/Olympus\" is not a time zone"), "{err}");
    }

    #[test]
    fn binary_files_are_refused_with_what_they_are() {
        let server = TestServer::start(&[]);
        for (kind, bytes) in binaries() {
            let v = server.upload(&bytes, "data.csv", "t-binary");
            assert_error(&v, &format!("not a dataset: {kind}"));
        }
        // Nothing of them was kept.
        let kept = walk_files(&server.data_dir.join("blobs"));
        assert!(kept.is_empty(), "{kept:?}");

        let tmp = tempfile::tempdir().unwrap();
        let (_, png) = &binaries()[0];
        let file = tmp.path().join("picture.csv");
        std::fs::write(&file, png).unwrap();
        for args in [
            vec![
                "convert",
                file.to_str().unwrap(),
                "--out",
                tmp.path().join("o").to_str().unwrap(),
            ],
            vec!["features", file.to_str().unwrap()],
        ] {
            let out = Command::new(BIN).args(&args).output().unwrap();
            assert!(!out.status.success(), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("not a dataset: PNG image"), "{args:?}: {err}");
        }
        assert!(
            !tmp.path().join("o").exists(),
            "nothing is created for a refused file"
        );
    }

    #[test]
    fn convert_fails_when_nothing_was_converted() {
        let tmp = tempfile::tempdir().unwrap();
        let bad = tmp.path().join("bad.csv");
        std::fs::write(
            &bad,
            "src,dst,Protocol\nnot-an-ip!,also bad!,tcp\n1.2.3.4,???,udp\n",
        )
        .unwrap();
        let bundle = tmp.path().join("b.json");
        let out = Command::new(BIN)
            .arg("convert")
            .arg(&bad)
            .arg("--bundle")
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("row 1:"), "{err}");
        assert!(
            err.contains("nothing was converted: every one of the 2 rows was rejected"),
            "{err}"
        );
        assert!(!bundle.exists(), "no empty bundle is left behind");
        let header_only = tmp.path().join("header.csv");
        std::fs::write(&header_only, "src,dst\n").unwrap();
        let out = Command::new(BIN)
            .arg("convert")
            .arg(&header_only)
            .arg("--out")
            .arg(tmp.path().join("o"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("the file has no data rows"));
    }

    #[test]
    fn first_run_messages_are_said_once_and_plainly() {
        // The node: a new data directory is announced, "listening" printed once.
        let server = TestServer::start_process(&[]);
        drop(server.get_json("/healthz"));
        let log = std::fs::read_to_string(server.data_dir.with_extension("log")).unwrap();
        assert!(log.contains("created a new, empty data directory"), "{log}");
        assert!(
            !log.contains("listening"),
            "the address is printed once, on stdout: {log}"
        );

        // The users CLI on a mistyped directory says so too.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("typo");
        let out = users_cli(&dir, &["list"]);
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("created a new, empty data directory")
        );
        let again = users_cli(&dir, &["list"]);
        assert!(!String::from_utf8_lossy(&again.stderr).contains("created"));

        // Grants are listed, and `revoke --write all` takes back a grant of one collection.
        users_ok(&dir, &["add", "peer1"]);
        let inbox = "59007f81-b7cc-590b-8357-bdbeb2ef1ecd";
        users_ok(&dir, &["grant", "peer1", "--write", inbox]);
        let list = users_ok(&dir, &["list"]);
        assert!(list.contains(&format!("TAXII write: {inbox}")), "{list}");
        users_ok(&dir, &["revoke", "peer1", "--write", "all"]);
        let list = users_ok(&dir, &["list"]);
        assert!(list.contains("TAXII write: none"), "{list}");
        assert!(
            !users_cli(&dir, &["revoke", "peer1", "--write", "all"])
                .status
                .success()
        );

        // `br-cti report` names the cause of a transport failure.
        let findings = tmp.path().join("findings.json");
        std::fs::write(&findings, r#"[{"riskId":"r1"}]"#).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = Command::new(BIN)
            .args([
                "report",
                "--to",
                &format!("http://127.0.0.1:{port}"),
                "--user",
                "platA",
            ])
            .args(["--token", "x", "--attempts", "1"])
            .arg(&findings)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(err.contains("connection refused"), "{err}");
    }

    /// The README's quick start, run as written: every ```sh block between the quick-start
    /// markers, in order, in one bash with `set -euo pipefail`, against a fresh node; then, in the
    /// same shell, the examples of the reference in `docs/`, which continue it. Blocks whose info
    /// string says `norun` (installing, starting the node) are what the test does itself: `br-cti`
    /// is this build, and the node listens on a random port instead of 5000.
    #[test]
    fn the_readme_quick_start_and_the_docs_examples_run_as_written() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let start = readme
            .find("<!-- quickstart:begin -->")
            .expect("README has a quick start");
        let end = readme
            .find("<!-- quickstart:end -->")
            .expect("the quick start ends");
        let section = &readme[start..end];
        assert!(
            section.contains("br-cti serve"),
            "the quick start says how to run the node"
        );
        let mut sources: Vec<(String, String)> = runnable_blocks(section)
            .into_iter()
            .enumerate()
            .map(|(i, b)| (format!("README quick start, block {}", i + 1), b))
            .collect();
        let quick_start_blocks = sources.len();
        assert!(
            quick_start_blocks >= 5,
            "the quick start has {quick_start_blocks} runnable blocks"
        );
        for doc in ["api.md", "hidden-danger.md", "taxii.md", "cli.md"] {
            let text = std::fs::read_to_string(root.join("docs").join(doc)).unwrap();
            for (i, b) in runnable_blocks(&text).into_iter().enumerate() {
                sources.push((format!("docs/{doc}, block {}", i + 1), b));
            }
        }
        let mut script = String::from("set -euo pipefail\n");
        for (name, block) in &sources {
            script.push_str(&format!("echo '--- {name}'\n{block}"));
        }

        let work = tempfile::tempdir().unwrap();
        let data = work.path().join("br-cti-data");
        let server = TestServer::start_in(&data, &[]);
        let script = script.replace("http://127.0.0.1:5000", &server.base);
        // The commands run where a user cloned the repository: the sample is at samples/.
        std::os::unix::fs::symlink(root.join("samples"), work.path().join("samples")).unwrap();
        // `br-cti` is this build; `python3` has the oracles' packages (taxii2-client).
        let python_bin = oracle_python().parent().unwrap().to_path_buf();
        let bin_dir = Path::new(BIN).parent().unwrap();
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(work.path())
            .env(
                "PATH",
                format!(
                    "{}:{}:{}",
                    bin_dir.display(),
                    python_bin.display(),
                    std::env::var("PATH").unwrap()
                ),
            )
            .env_remove("BRCTI_API_TOKEN")
            .env_remove("BRCTI_DATA_DIR")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "the examples failed\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        );
        let last = &sources.last().unwrap().0;
        assert!(stdout.contains(&format!("--- {last}")), "{stdout}");
        // What they did is really there.
        let sample_hash = sha256_hex(&std::fs::read(sample("honeypot-sample.jsonl")).unwrap());
        assert!(!server.stix_records(&sample_hash).is_empty());
        assert!(!server.cti_records(&sample_hash).is_empty());
        assert!(
            stdout.contains(" objects\n"),
            "the taxii2-client example counted: {stdout}"
        );
    }
}
