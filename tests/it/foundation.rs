//! The foundation over real HTTP: upload, dedupe, task records, features of every format, the
//! envelope on every error path, authentication and CORS.

use std::process::Command;

use crate::common::*;
use serde_json::json;

fn blob_count(server: &TestServer) -> usize {
    server.blob_count()
}

#[test]
fn same_bytes_are_stored_once_and_each_task_gets_its_record() {
    let server = TestServer::start(&[]);
    let body = b"a,b\n1,2\n";
    let first = server.upload(body, "a.csv", "2001");
    let second = server.upload(body, "b.csv", "2002");
    assert_eq!(first["data"]["file_hash"], second["data"]["file_hash"]);
    assert_eq!(second["data"]["task_record"]["task_id"], "2002");
    assert_eq!(blob_count(&server), 1);
    // A task id already used for another file is refused and nothing is stored.
    let other = server.upload(b"c,d\n3,4\n", "c.csv", "2001");
    assert_error(&other, "task_id \"2001\" already belongs to another file");
    // An empty task id gets a generated one.
    let generated = server.upload(body, "a.csv", "");
    assert_eq!(generated["code"], 200, "{generated}");
    assert_eq!(
        generated["data"]["task_record"]["task_id"]
            .as_str()
            .unwrap()
            .len(),
        36
    );
}

#[test]
fn concurrent_uploads_of_the_same_file_corrupt_nothing() {
    let server = TestServer::start(&[]);
    let mut body = Vec::new();
    for i in 0..200_000 {
        body.extend_from_slice(format!("{i},{}\n", i * 7).as_bytes());
    }
    let expected = sha256_hex(&body);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let (server, body) = (&server, &body);
                s.spawn(move || server.upload(body, "big.csv", &format!("c{i}")))
            })
            .collect();
        for h in handles {
            let v = h.join().unwrap();
            assert_eq!(v["code"], 200, "{v}");
            assert_eq!(v["data"]["file_hash"], expected);
        }
    });
    assert_eq!(blob_count(&server), 1);
    let stored = server.blob(&expected);
    assert_eq!(sha256_hex(&stored), expected);
    assert_eq!(server.staged_count(), 0);
}

fn features_of(server: &TestServer, bytes: &[u8], name: &str) -> String {
    let hash = server.upload_ok(bytes, name);
    let v = server.features(&hash);
    assert_eq!(v["code"], 200, "{name}: {v}");
    assert_eq!(v["msg"], "Get traffic data features name successfully");
    v["data"].as_str().unwrap().to_string()
}

#[test]
fn features_of_every_format() {
    let server = TestServer::start(&[]);
    assert_eq!(
        features_of(&server, b"src,dst,Protocol\n1,2,TCP\n", "a.csv"),
        "src;dst;Protocol"
    );
    assert_eq!(
        features_of(
            &server,
            b"\xEF\xBB\xBFsrc;dst;pktcount\n10.0.0.1;10.0.0.2;3,5\n",
            "semi.csv"
        ),
        "src;dst;pktcount"
    );
    assert_eq!(features_of(&server, b"a\tb\n1\t2\n", "tab.tsv"), "a;b");
    assert_eq!(features_of(&server, b"a|b|c\n1|2|3\n", "pipe.txt"), "a;b;c");
    let (gbk, _, _) =
        encoding_rs::GBK.encode("时间,源IP,目的IP,攻击类型\n2024-01-01,1.1.1.1,2.2.2.2,扫描\n");
    assert_eq!(
        features_of(&server, &gbk, "gbk.csv"),
        "时间;源IP;目的IP;攻击类型"
    );

    // XLSX written by a real library; the first worksheet counts.
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    for (c, h) in ["dt", "switch", "src", "dst", "label"].iter().enumerate() {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    sheet.write_number(1, 0, 11425.0).unwrap();
    sheet.write_string(1, 2, "10.0.0.1").unwrap();
    book.add_worksheet()
        .write_string(0, 0, "second sheet")
        .unwrap();
    let xlsx = book.save_to_buffer().unwrap();
    assert_eq!(
        features_of(&server, &xlsx, "sdn.xlsx"),
        "dt;switch;src;dst;label"
    );

    // XLS (BIFF8) written by xlwt: see tests/fixtures/make_xls.py.
    let xls = std::fs::read(fixture("sdn_small.xls")).unwrap();
    assert_eq!(
        features_of(&server, &xls, "sdn.xls"),
        "dt;src;dst;Protocol;label;备注"
    );

    // JSON array: the union of keys in first-seen order.
    assert_eq!(
        features_of(&server, br#"[{"a":1,"b":2},{"c":3,"a":4}]"#, "rows.json"),
        "a;b;c"
    );
    // JSON Lines named .txt, as the old front ends upload them.
    assert_eq!(
        features_of(
            &server,
            b"{\"time\":1,\"src\":\"1.2.3.4\"}\n{\"dst\":\"5.6.7.8\"}\n",
            "events.txt"
        ),
        "time;src;dst"
    );
    let sample = std::fs::read(sample("honeypot-sample.jsonl")).unwrap();
    assert_eq!(
        features_of(&server, &sample, "honeypot.txt"),
        "time;src;dst;device_type;sub_device_type;protocol;sport;dport;action;payload;url;attack"
    );
}

#[test]
fn feature_errors_are_handled_and_named() {
    let server = TestServer::start(&[]);
    let unknown = "ab".repeat(32);
    assert_error(
        &server.features(&unknown),
        &format!("no uploaded file has hash {unknown}"),
    );
    assert_error(
        &server.features("abc"),
        "field `file_hash` has 3 characters",
    );
    assert_error(
        &server.features(&format!("../{}", "a".repeat(61))),
        "non-hexadecimal character '.'",
    );
    assert_error(&server.features(""), "field `file_hash` is empty");

    let blank = server.upload_ok(b" \n\n", "blank.csv");
    assert_error(&server.features(&blank), "the file is empty");
    let broken_json = server.upload_ok(b"{\"a\":1}\n{\"b\":\n", "broken.jsonl");
    assert_error(&server.features(&broken_json), "JSON error at line 2");
    let broken_xlsx = server.upload_ok(b"PK\x03\x04not really a zip", "broken.xlsx");
    assert_error(&server.features(&broken_xlsx), "XLSX error");
}

#[test]
fn bad_requests_answer_the_envelope_naming_the_field() {
    let server = TestServer::start(&[]);
    let p = "/data/get_traffic_data_features";
    assert_error(
        &server.post_raw(p, b"{not json".to_vec()),
        "malformed JSON body",
    );
    assert_error(&server.post_raw(p, Vec::new()), "the request body is empty");
    assert_error(
        &server.post_json(p, &json!({})),
        "missing field `file_hash`",
    );
    assert_error(
        &server.post_json(p, &json!({"file_hash": 12})),
        "field `file_hash`: invalid type: integer",
    );
    assert_error(&server.post_json(p, &json!([1, 2])), "invalid request");

    // Upload: missing parts, wrong body type, empty file.
    let form = reqwest::blocking::multipart::Form::new().text("task_id", "1");
    let v = json_of(
        server
            .client
            .post(server.url("/data/upload_file"))
            .multipart(form)
            .send()
            .unwrap(),
    );
    assert_error(&v, "missing field `file`");
    let form = reqwest::blocking::multipart::Form::new().part(
        "file",
        reqwest::blocking::multipart::Part::bytes(b"a\n".to_vec()).file_name("a.csv"),
    );
    let v = json_of(
        server
            .client
            .post(server.url("/data/upload_file"))
            .multipart(form)
            .send()
            .unwrap(),
    );
    assert_error(&v, "missing field `task_id`");
    let v = server.post_json("/data/upload_file", &json!({"file": "x"}));
    assert_error(&v, "expected a multipart/form-data body");
    assert_error(
        &server.upload(b"", "empty.csv", "9"),
        "field `file` is empty",
    );
    assert_error(
        &server.upload(b"a\n", "a.csv", &"x".repeat(200)),
        "field `task_id` is longer than 128",
    );
    // Nothing of the failed uploads was kept.
    assert_eq!(server.blob_count(), 0);

    // Transport errors keep the envelope with their real status.
    let resp = server.client.get(server.url("/data/nope")).send().unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(json_of(resp)["code"], 404);
    let resp = server
        .client
        .get(server.url("/data/get_traffic_data_features"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(json_of(resp)["code"], 405);
}

#[test]
fn uploads_over_the_cap_are_refused_and_leave_nothing() {
    let server = TestServer::start(&["--max-upload-bytes", "1000"]);
    let body = vec![b'x'; 5000];
    let form = reqwest::blocking::multipart::Form::new()
        .text("task_id", "1")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(body).file_name("big.csv"),
        );
    let resp = server
        .client
        .post(server.url("/data/upload_file"))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v = json_of(resp);
    assert_eq!(v["code"], 413);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("upload limit of 1000 bytes"),
        "{v}"
    );
    assert_eq!(server.upload(&[b'y'; 999], "ok.csv", "2")["code"], 200);
    assert_eq!(server.staged_count(), 0);
}

#[test]
fn api_token_guards_the_data_api() {
    let server = TestServer::start(&["--api-token", "s3cret-token"]);
    let p = server.url("/data/get_traffic_data_features");
    let body = json!({"file_hash": "ab".repeat(32)}).to_string();
    let resp = server.client.post(&p).body(body.clone()).send().unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(json_of(resp)["code"], 401);
    let resp = server
        .client
        .post(&p)
        .bearer_auth("wrong")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = server
        .client
        .post(&p)
        .bearer_auth("s3cret-token")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_error(&json_of(resp), "no uploaded file has hash");
    // An upload without the token is refused after its body is read, so that a client sending
    // the whole body first (8 MiB here, more than the sockets buffer) reads the refusal.
    let form = reqwest::blocking::multipart::Form::new()
        .text("task_id", "1")
        .part(
            "file",
            reqwest::blocking::multipart::Part::bytes(vec![b'a'; 8 << 20]).file_name("big.csv"),
        );
    let resp = server
        .client
        .post(server.url("/data/upload_file"))
        .multipart(form)
        .send()
        .expect("the refusal reaches a client that sends everything first");
    assert_eq!(resp.status(), 401);
    assert_eq!(server.staged_count(), 0);
    // CORS preflight is answered without the token.
    let resp = server
        .client
        .request(reqwest::Method::OPTIONS, &p)
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
}

#[test]
fn cors_origins_are_configurable() {
    let server = TestServer::start(&["--cors-origins", "http://front.example:3000"]);
    let body = json!({"file_hash": "ab".repeat(32)}).to_string();
    let allowed = server
        .client
        .post(server.url("/data/get_traffic_data_features"))
        .header("origin", "http://front.example:3000")
        .body(body.clone())
        .send()
        .unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "http://front.example:3000"
    );
    let other = server
        .client
        .post(server.url("/data/get_traffic_data_features"))
        .header("origin", "http://evil.example")
        .body(body)
        .send()
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

/// A database file deleted or replaced under the running node: readiness fails and requests
/// are refused, instead of acknowledging writes that go to a file nobody will read.
#[test]
fn a_replaced_database_file_is_noticed() {
    let server = TestServer::start_sqlite(&[]);
    server.upload_ok(b"src,dst\n10.0.0.1,10.0.0.2\n", "a.csv");
    assert_eq!(server.get_json("/readyz")["status"], "ready");
    let db = server.data_dir.join("br-cti.sqlite");
    let aside = server.data_dir.join("aside.sqlite");
    std::fs::copy(&db, &aside).unwrap();
    std::fs::rename(&aside, &db).unwrap(); // the same bytes, another file
    let resp = server.client.get(server.url("/readyz")).send().unwrap();
    assert_eq!(resp.status(), 503);
    let v = json_of(resp);
    assert!(
        v["checks"]["database"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("deleted or replaced"),
        "{v}"
    );
    let resp = server
        .client
        .post(server.url("/data/upload_file"))
        .multipart(
            reqwest::blocking::multipart::Form::new()
                .text("task_id", "t2")
                .part(
                    "file",
                    reqwest::blocking::multipart::Part::bytes(b"src\n10.0.0.9\n".to_vec())
                        .file_name("b.csv"),
                ),
        )
        .send()
        .unwrap();
    assert_eq!(resp.status(), 503);
    let v = json_of(resp);
    assert!(v.to_string().contains("deleted or replaced"), "{v}");
}

/// The fixture XLS workbook with `patch` applied at the first record of `record` (its type and
/// length bytes) after `from`: a bomb made from a real BIFF8 file.
fn patched_xls(record: &[u8; 4], patch: &[(usize, &[u8])]) -> Vec<u8> {
    let mut bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sdn_small.xls"
    ))
    .unwrap();
    let at = bytes
        .windows(4)
        .position(|w| w == record)
        .expect("the fixture holds the record")
        + 4;
    for (offset, new) in patch {
        bytes[at + offset..at + offset + new.len()].copy_from_slice(new);
    }
    bytes
}

/// Waits until the server closes `stream` (a read returns 0 or fails), at most `within`;
/// answers how long it took.
fn closed_within(
    stream: &mut std::net::TcpStream,
    within: std::time::Duration,
) -> Option<std::time::Duration> {
    use std::io::Read;
    let start = std::time::Instant::now();
    stream
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while start.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(start.elapsed()),
        }
    }
    None
}

#[test]
fn slow_and_stalled_clients_are_cut_off() {
    use std::io::Write;
    let server = TestServer::start(&["--header-timeout-secs", "1", "--idle-timeout-secs", "2"]);
    let addr = server.base.trim_start_matches("http://").to_string();
    // Headers that never end (a trickle, one byte every 300 ms).
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST /data/upload_file HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let trickle = std::thread::spawn({
        let mut s = slow.try_clone().unwrap();
        move || {
            for _ in 0..20 {
                if s.write_all(b"X").is_err() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(300));
            }
        }
    });
    let took = closed_within(&mut slow, std::time::Duration::from_secs(8))
        .expect("a request whose headers never end is cut off");
    assert!(took < std::time::Duration::from_secs(4), "{took:?}");
    trickle.join().unwrap();

    // An upload that stops sending after 1 MiB.
    let boundary = "XyZ";
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    let head = format!(
        "POST /data/upload_file HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 10485760\r\n\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"task_id\"\r\n\r\nstall\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\nsrc,dst\r\n"
    );
    stalled.write_all(head.as_bytes()).unwrap();
    stalled.write_all(&vec![b'1'; 1 << 20]).unwrap();
    let took = closed_within(&mut stalled, std::time::Duration::from_secs(10))
        .expect("a stalled upload is cut off");
    assert!(took < std::time::Duration::from_secs(6), "{took:?}");
    // Its staged file is gone, and the node serves others.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let staged = server.staged_count();
        if staged == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "staged files left: {staged}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(server.get_json("/healthz")["status"], "alive");
}

/// Tests of the real binary as a process (the slow stage).
mod process {
    use super::*;

    #[test]
    fn upload_returns_and_persists_the_task_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let body = b"Throughput,Jitter,Response time,Class\n1,2,3,normal\n";
        let hash = {
            let server = TestServer::start_in(&dir, &[]);
            let v = server.upload(body, "SDN_data_set_raw.csv", "1001");
            assert_eq!(v["code"], 200, "{v}");
            assert_eq!(v["msg"], "File uploaded successfully");
            let d = &v["data"];
            assert_eq!(d["file_hash"], sha256_hex(body));
            assert_eq!(d["file_size"], body.len());
            let rec = &d["task_record"];
            assert_eq!(rec["task_id"], "1001");
            assert_eq!(rec["source_file_hash"], sha256_hex(body));
            assert!(rec["timestamp"].as_i64().unwrap() > 1_700_000_000_000);
            let steps = rec["step_status"].as_array().unwrap();
            assert_eq!(steps.len(), 4);
            assert_eq!(
                steps[0],
                json!({"step": 0, "status": "finished", "total_num": 1})
            );
            for (i, s) in steps.iter().enumerate().skip(1) {
                assert_eq!(s["step"], i);
                assert_eq!(s["status"], "pending");
            }
            // The stored name is the hash; the client's name never becomes a path.
            let h = sha256_hex(body);
            assert!(
                server
                    .data_dir
                    .join("blobs")
                    .join(&h[..2])
                    .join(&h)
                    .is_file()
            );
            h
        };
        // After a restart the file and its task are still known.
        let server = TestServer::start_in(&dir, &[]);
        let v = server.features(&hash);
        assert_eq!(v["data"], "Throughput;Jitter;Response time;Class", "{v}");
        let again = server.upload(body, "x.csv", "1001");
        assert_eq!(again["code"], 200, "{again}");
        assert_eq!(again["data"]["task_record"]["task_id"], "1001");
    }

    #[test]
    fn refuses_to_expose_an_unauthenticated_node() {
        let tmp = tempfile::tempdir().unwrap();
        let out = Command::new(BIN)
            .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
            .arg(tmp.path())
            .env_remove("BRCTI_API_TOKEN")
            .env_remove("BRCTI_INSECURE")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("refusing to listen on 0.0.0.0:0"), "{err}");
        assert!(err.contains("--api-token"), "{err}");
    }

    #[test]
    fn features_cli_reads_files_offline() {
        let out = Command::new(BIN)
            .arg("features")
            .arg(sample("honeypot-sample.jsonl"))
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().next(), Some("time"));
        assert_eq!(text.lines().count(), 12);
        let out = Command::new(BIN)
            .args(["features", "/nonexistent/file.csv"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot open /nonexistent/file.csv"));
    }

    #[test]
    fn a_clean_stop_leaves_a_complete_database_file() {
        let mut server = TestServer::start_process(&[]);
        let hash = server.upload_ok(b"src,dst,Protocol\n10.0.0.1,10.0.0.2,tcp\n", "a.csv");
        assert!(server.terminate(), "SIGTERM ends the node cleanly");
        let log = std::fs::read_to_string(server.data_dir.with_extension("log")).unwrap();
        assert!(log.contains("database checkpointed"), "{log}");
        // A copy of the database file alone (no -wal beside it) has everything.
        let copy = tempfile::tempdir().unwrap();
        let db = copy.path().join("br-cti.sqlite");
        std::fs::copy(server.data_dir.join("br-cti.sqlite"), &db).unwrap();
        let conn = rusqlite::Connection::open(&db).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM files WHERE hash = ?1", [&hash], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1);
    }

    /// `br-cti backup` while the node runs and converts: the copy is a data directory of its own
    /// that serves the same records and files.
    #[test]
    fn an_online_backup_serves_what_the_node_had() {
        let server = TestServer::start(&[]);
        let csv: String = std::iter::once("src,dst,Protocol\n".to_string())
            .chain((0..500).map(|i| format!("10.0.{}.{},10.1.0.1,tcp\n", i / 250, i % 250)))
            .collect();
        let hash = server.upload_ok(csv.as_bytes(), "a.csv");
        server.start_stix(&json!({"file_hash": hash, "stix_compress": 100}));
        server.wait_stix(&hash);
        // A second upload, converting while the backup runs.
        let busy = server.upload_ok(csv.replace("tcp", "udp").as_bytes(), "b.csv");
        server.start_stix(&json!({"file_hash": busy, "stix_compress": 10}));
        let dest = tempfile::tempdir().unwrap();
        let backup = dest.path().join("copy");
        let out = Command::new(BIN)
            .args(["backup", backup.to_str().unwrap(), "--data-dir"])
            .arg(&server.data_dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("written to"), "{stdout}");
        // Into a directory that is not empty: refused.
        let again = Command::new(BIN)
            .args(["backup", backup.to_str().unwrap(), "--data-dir"])
            .arg(&server.data_dir)
            .output()
            .unwrap();
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
        server.wait_stix(&busy);

        let copy = TestServer::start_in(&backup, &[]);
        let records = copy.stix_records(&hash);
        assert_eq!(records.len(), 5);
        // The same records, but for where the copy keeps the files.
        let without_path = |mut rs: Vec<serde_json::Value>| {
            for r in &mut rs {
                r.as_object_mut().unwrap().remove("stix_file_path");
            }
            rs
        };
        assert_eq!(
            without_path(records.clone()),
            without_path(server.stix_records(&hash))
        );
        for r in &records {
            let stix = r["stix_file_hash"].as_str().unwrap();
            assert_eq!(copy.stix_file(&hash, stix), server.stix_file(&hash, stix));
        }
        let features = copy.features(&hash);
        assert_eq!(features["data"], "src;dst;Protocol", "{features}");
    }

    /// Small files that declare or inflate to something huge: the node answers each with the limit
    /// it hit, stays up, and its memory stays within budget.
    #[test]
    fn xlsx_bombs_are_refused_with_the_limit_they_hit() {
        const BUDGET_MIB: f64 = 512.0;
        let server = TestServer::start_process(&[]);
        let ok_row = r#"<row r="2"><c r="A2" t="inlineStr"><is><t>1.2.3.4</t></is></c></row>"#;
        let header = |cell: &str| {
            format!(
                r#"<row r="1"><c r="A1" t="inlineStr"><is><t>src</t></is></c><c r="{cell}" t="inlineStr"><is><t>far</t></is></c></row>{ok_row}"#
            )
        };
        let huge_strings = {
            // 130 MiB of shared strings that deflate to a few hundred KiB.
            let item = format!("<si><t>{}</t></si>", "a".repeat(1000));
            let n = (130 << 20) / item.len();
            let mut ss = format!(
                r#"<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" uniqueCount="{n}">"#
            );
            ss.push_str(&item.repeat(n));
            ss.push_str("</sst>");
            ss.into_bytes()
        };
        let big_cell = format!(
            r#"<row r="1"><c r="A1" t="inlineStr"><is><t>src</t></is></c></row><row r="2"><c r="A2" t="inlineStr"><is><t>{}</t></is></c></row>"#,
            "b".repeat(2 << 20)
        );
        let wide: String = (0..20_000u32)
            .map(|i| format!(r#"<c t="inlineStr"><is><t>c{i}</t></is></c>"#))
            .collect();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "uniqueCount of a trillion",
                xlsx_with(
                    &sheet_xml(&header("B1")),
                    Some(br#"<sst xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" count="1" uniqueCount="1000000000000"><si><t>x</t></si></sst>"#),
                ),
                "uniqueCount=\"1000000000000\" but holds 1 strings",
            ),
            (
                "header cell at ZZZZZ1",
                xlsx_with(&sheet_xml(&header("ZZZZZ1")), None),
                "the cell reference \"ZZZZZ1\"",
            ),
            (
                "header cell at ZZZZZZZZZZ1",
                xlsx_with(&sheet_xml(&header("ZZZZZZZZZZ1")), None),
                "the cell reference \"ZZZZZZZZZZ1\" is not one of a worksheet",
            ),
            (
                "header cell at XFE1",
                xlsx_with(&sheet_xml(&header("XFE1")), None),
                "beyond a worksheet's 16384 columns",
            ),
            (
                "a header of 20,000 columns",
                xlsx_with(&sheet_xml(&format!(r#"<row r="1">{wide}</row>{ok_row}"#)), None),
                "16384",
            ),
            (
                "shared strings inflating to 130 MiB",
                xlsx_with(&sheet_xml(&header("B1")), Some(&huge_strings)),
                "inflates to more than 134217728 bytes",
            ),
            ("a 2 MiB cell", xlsx_with(&sheet_xml(&big_cell), None), "a cell of more than 1048576 bytes"),
        ];
        for (what, bytes, needle) in cases {
            assert!(
                bytes.len() < 1 << 20,
                "{what}: the bomb itself stays small ({} bytes)",
                bytes.len()
            );
            let hash = server.upload_ok(&bytes, "bomb.xlsx");
            let v = server.features(&hash);
            assert_error(&v, needle);
            let v = server.start_stix(&json!({"file_hash": hash}));
            assert_error(&v, needle);
            let peak = server.peak_rss_mib();
            assert!(peak < BUDGET_MIB, "{what}: peak RSS {peak:.0} MiB");
            assert_eq!(server.get_json("/healthz")["status"], "alive", "{what}");
        }
        // A well-formed workbook still reads.
        let fine = xlsx_with(&sheet_xml(&header("B1")), None);
        let hash = server.upload_ok(&fine, "fine.xlsx");
        assert_eq!(server.features(&hash)["data"], "src;far");
    }

    /// XLS, CSV and JSON files that declare or hold more than a reader may take: each answer names
    /// the limit, the node stays up and within its memory budget. The record and column limits are
    /// lowered by flags so that the files stay small.
    #[test]
    fn dataset_bombs_of_every_format_are_refused_with_their_limit() {
        const BUDGET_MIB: f64 = 512.0;
        let server =
            TestServer::start_process(&["--max-record-bytes", "65536", "--max-columns", "1000"]);
        // A DIMENSIONS record declaring 4 billion rows: calamine reserved room for them (abort).
        let dims = patched_xls(
            b"\x00\x02\x0e\x00",
            &[
                (4, &0xFFFF_FFF0u32.to_le_bytes()),
                (10, &0xFFu16.to_le_bytes()),
            ],
        );
        // One cell moved to row 65536, column 256: the sheet is laid out as 16.7 million cells.
        let spread = patched_xls(
            b"\xfd\x00\x0a\x00",
            &[(0, &0xFFFFu16.to_le_bytes()), (2, &0xFFu16.to_le_bytes())],
        );
        let mut quoted = b"src,note\n1.2.3.4,\"".to_vec();
        while quoted.len() < 200_000 {
            quoted.extend_from_slice(b"a short line inside one quoted field\n");
        }
        quoted.extend_from_slice(b"\"\n");
        let mut element = b"[{\"src\":\"1.2.3.4\"},\n{\"src\":[".to_vec();
        while element.len() < 200_000 {
            element.extend_from_slice(b"1,\n");
        }
        element.extend_from_slice(b"1]}]");
        let keys: String = (0..1001).map(|i| format!("{{\"k{i}\":1}}\n")).collect();
        let columns: String = (0..1001).map(|i| format!("c{i},")).collect::<String>() + "x\n1\n";
        let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
            (
                "XLS dimensions",
                dims,
                "x.xls",
                "declares an area of 1095216656400 cells",
            ),
            (
                "XLS cells far apart",
                spread,
                "x.xls",
                "has cells from row 1 to row 65536 and column 1 to column 256",
            ),
            (
                "a CSV record over many lines",
                quoted,
                "x.csv",
                "the CSV record from byte 9 is longer than 65536 bytes",
            ),
            (
                "a JSON array element over many lines",
                element,
                "x.json",
                "the element of the JSON array from byte",
            ),
            (
                "JSON objects with 1001 keys",
                keys.into_bytes(),
                "x.jsonl",
                "more than 1000 distinct keys",
            ),
            (
                "a CSV header of 1002 columns",
                columns.into_bytes(),
                "x.csv",
                "--max-columns",
            ),
        ];
        for (what, bytes, name, needle) in cases {
            let hash = server.upload_ok(&bytes, name);
            let features = server.features(&hash);
            if what.starts_with("a CSV record") {
                // The header is fine: only reading the rows meets the record.
                assert_eq!(features["data"], "src;note", "{what}");
            } else {
                assert_error(&features, needle);
            }
            let started = server.start_stix(&json!({"file_hash": hash}));
            if what.starts_with("JSON objects") {
                // Converting reads one object at a time: the union of keys is never held.
                assert_eq!(started["code"], 200, "{what}: {started}");
                server.wait_stix(&hash);
            } else {
                assert_error(&started, needle);
            }
            let peak = server.peak_rss_mib();
            assert!(peak < BUDGET_MIB, "{what}: peak RSS {peak:.0} MiB");
            assert_eq!(server.get_json("/healthz")["status"], "alive", "{what}");
        }
        // The fixture itself still reads.
        let hash = server.upload_ok(
            &std::fs::read(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/sdn_small.xls"
            ))
            .unwrap(),
            "sdn.xls",
        );
        assert_eq!(
            server.features(&hash)["data"],
            "dt;src;dst;Protocol;label;备注"
        );
    }

    #[test]
    fn connections_over_the_limit_wait_for_a_free_one() {
        let server =
            TestServer::start_process(&["--max-connections", "3", "--header-timeout-secs", "30"]);
        let addr = server.base.trim_start_matches("http://").to_string();
        // Three silent connections take every slot.
        let mut held: Vec<std::net::TcpStream> = (0..3)
            .map(|_| std::net::TcpStream::connect(&addr).unwrap())
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let quick = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(1))
            .build()
            .unwrap();
        assert!(
            quick.get(server.url("/healthz")).send().is_err(),
            "a fourth connection is not served while three are open"
        );
        // The refused client is gone for good (its connection waits in the backlog and is
        // accepted first: closed, it frees its slot at once). One held connection ends: the
        // next client is served.
        drop(quick);
        held.pop();
        let resp = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .unwrap()
            .get(server.url("/healthz"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        drop(held);
    }

    /// A log that cannot be written (standard error on a full disk: here `/dev/full`) must not
    /// take requests down: tracing-subscriber reports a failed write with `eprint!`, which panics.
    #[test]
    fn a_log_that_cannot_be_written_does_not_take_requests_down() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .stdout(std::process::Stdio::piped())
            .stderr(full)
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base = line
            .trim()
            .strip_prefix("br-cti listening on ")
            .unwrap_or_else(|| panic!("{line:?}"))
            .to_string();
        let client = reqwest::blocking::Client::new();
        for _ in 0..3 {
            // Each of these logs (the request, an error): every one must still be answered.
            let v: serde_json::Value = client
                .get(format!("{base}/healthz"))
                .send()
                .unwrap()
                .json()
                .unwrap();
            assert_eq!(v["status"], "alive");
            let v: serde_json::Value = client
                .post(format!("{base}/data/get_stix_process_progress"))
                .json(&json!({"file_hash": "nope"}))
                .send()
                .unwrap()
                .json()
                .unwrap();
            assert_eq!(v["code"], 400, "{v}");
            let resp = client.get(format!("{base}/no/such/path")).send().unwrap();
            assert_eq!(resp.status(), 404);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
