//! The CTI step over HTTP: upload → STIX → CTI records, statistics with a real `.mmdb`,
//! chain payloads, idempotent re-runs, publication, restart after `kill -9`, request errors.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{Value, json};

/// An SDN-style CSV whose addresses cover every kind of location: in the test database
/// (101.33.x.x, 2606:4700::x), public but unknown to it (45.x.1.1), private (192.168.1.x) and
/// reserved (198.51.100.7, documentation).
fn dataset(rows: usize) -> Vec<u8> {
    let mut csv = String::from("dt,src,dst,pktcount,bytecount,Protocol,tot_dur,label\n");
    for i in 0..rows {
        let src = match i % 3 {
            0 => format!("101.33.0.{}", i % 50 + 1),
            1 => format!("2606:4700::{:x}", i % 20 + 1),
            _ => format!("45.{}.1.1", i % 7),
        };
        let dst = if i % 5 == 0 {
            "198.51.100.7".to_string()
        } else {
            format!("192.168.1.{}", i % 10 + 1)
        };
        csv.push_str(&format!(
            "{},{src},{dst},{},{},{},{}.0,{}\n",
            3000 + i,
            i % 20 + 1,
            i * 3,
            ["UDP", "TCP", "ICMP"][i % 3],
            45_006_000_000u64 + i as u64,
            i % 2
        ));
    }
    csv.into_bytes()
}

struct Node {
    server: TestServer,
    _geo: tempfile::TempDir,
}

fn node_with_geoip() -> Node {
    let geo = tempfile::tempdir().unwrap();
    let db = geo.path().join("city.mmdb");
    write_test_geoip(&db);
    Node {
        server: TestServer::start(&["--geoip-db", db.to_str().unwrap()]),
        _geo: geo,
    }
}

/// Uploads and converts a dataset; returns its hash.
fn converted(server: &TestServer, csv: &[u8], compress: u64) -> String {
    let up = server.upload(csv, "flows.csv", "task-of-cti");
    let hash = up["data"]["file_hash"].as_str().unwrap().to_string();
    let started = server.start_stix(&json!({
        "file_hash": hash, "stix_type": 1, "stix_compress": compress, "stix_tags": ["sdn"]
    }));
    assert_eq!(started["code"], 200, "{started}");
    server.wait_stix(&hash);
    hash
}

fn one(server: &TestServer, path: &str, hash: &str, cti: &str) -> Value {
    let v = server.post_json(path, &json!({"file_hash": hash, "cti_hash": cti}));
    assert_eq!(v["code"], 200, "{path}: {v}");
    v["data"].clone()
}

#[test]
fn cti_records_with_true_statistics_and_exact_payloads() {
    let node = node_with_geoip();
    let server = &node.server;
    let hash = converted(server, &dataset(300), 100);
    let started = server.start_cti(&json!({
        "process_id": "p1", "file_hash": hash, "cti_type": "1", "cti_name": "SDN flows",
        "open_source": "1", "cti_description": "flows seen on the SDN testbed",
        "default_value": "12.5", "incentive_mechanism": 2, "unknown_key": [1]
    }));
    assert_eq!(started["code"], 200, "{started}");
    assert_eq!(started["msg"], "start create local cti records by hash");
    assert_eq!(started["data"]["current_step"], 0);
    assert_eq!(started["data"]["total_step"], 3);
    // Readable from the very first poll: never a null window while the job exists.
    let first = server.cti_progress(&hash);
    assert_eq!(first["code"], 200, "{first}");
    assert!(
        ["queued", "running", "succeeded"].contains(&first["data"]["status"].as_str().unwrap()),
        "{first}"
    );
    let done = server.wait_cti(&hash);
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["current_step"], 3);
    assert_eq!(done["total_step"], 3);
    assert_eq!(done["records_done"], 3);
    assert_eq!(done["errors"], json!([]));
    assert_eq!(done["total_task_list"], json!([1, 2, 3]));

    let stix = server.stix_records(&hash);
    let ctis = server.cti_records(&hash);
    assert_eq!(ctis.len(), 3);
    let mut occurrences = 0;
    for (k, (s, c)) in stix.iter().zip(&ctis).enumerate() {
        assert_eq!(
            c["cti_hash"], s["stix_file_hash"],
            "cti_hash is the STIX file hash"
        );
        assert_eq!(c["cti_name"], format!("SDN flows ({}/3)", k + 1));
        assert_eq!(c["cti_type"], 1);
        assert_eq!(c["cti_traffic_type"], 3, "sdn tag of the dataset");
        assert_eq!(c["open_source"], 1);
        assert_eq!(c["tags"], json!(["sdn"]));
        assert_eq!(c["iocs"], s["stix_iocs"]);
        assert_eq!(c["value"], 12.5);
        assert_eq!(c["incentive_mechanism"], 2);
        assert_eq!(c["data_size"], s["stix_file_size"]);
        assert_eq!(c["stix_data"], s["stix_file_path"]);
        assert_eq!(c["data_source_hash"], hash);
        assert_eq!(c["onchain"], false);
        assert_eq!(c["cti_id"], Value::Null);

        // The STIX record now shows as 情报, and its cti_file_path reads the record.
        let path = s["cti_file_path"].as_str().expect("cti_file_path set");
        let via_path = server.get_json(path);
        assert_eq!(via_path["code"], 200, "{via_path}");
        assert_eq!(via_path["data"]["cti_hash"], c["cti_hash"]);

        let cti = c["cti_hash"].as_str().unwrap();
        let stats = one(server, "/data/get_cti_statistic_info", &hash, cti);
        assert_eq!(
            stats["ioc_ips_map"], s["ioc_ips_map"],
            "occurrences counted in the STIX objects match the conversion's own count"
        );
        assert_eq!(
            serde_json::from_str::<Value>(c["statistic_info"].as_str().unwrap()).unwrap(),
            stats
        );
        let ips = stats["ioc_ips_map"].as_object().unwrap();
        let mut per_location: BTreeMap<String, u64> = BTreeMap::new();
        for (ip, n) in ips {
            let key = stats["ips_locations_map"][ip].as_str().unwrap().to_string();
            let info = &stats["ips_locations_info_map"][ip];
            assert_eq!(
                key,
                format!(
                    "{},{},{}",
                    info["country"].as_str().unwrap(),
                    info["region"].as_str().unwrap(),
                    info["city"].as_str().unwrap()
                )
            );
            let expected = if ip.starts_with("101.33.") {
                "China,Guangdong,Guangzhou"
            } else if ip.starts_with("2606:4700:") {
                "United States,California,San Francisco"
            } else if ip.starts_with("45.") {
                "unknown,unknown,unknown"
            } else if ip.starts_with("192.168.") {
                "private,private,private"
            } else if ip == "198.51.100.7" {
                "reserved,reserved,reserved"
            } else {
                panic!("unexpected address {ip}")
            };
            assert_eq!(key, expected, "{ip}");
            if ip.starts_with("101.33.") {
                assert_eq!(info["loc"], "23.1167,113.25");
            } else if !ip.starts_with("2606:") {
                assert_eq!(info["loc"], "");
            }
            *per_location.entry(key).or_default() += n.as_u64().unwrap();
            occurrences += n.as_u64().unwrap();
        }
        let reported: BTreeMap<String, u64> =
            serde_json::from_value(stats["ioc_locations_map"].clone()).unwrap();
        assert_eq!(reported, per_location);
        assert!(
            stats["geoip_database"]
                .as_str()
                .unwrap()
                .starts_with("BrCti-Test-City")
        );

        // The chain payload: exactly the keys and JSON types of the chain.
        let payload = one(server, "/data/get_cti_chain_payload", &hash, cti);
        let keys: Vec<&str> = payload
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(
            sorted,
            [
                "create_time",
                "cti_hash",
                "cti_name",
                "cti_traffic_type",
                "cti_type",
                "data_size",
                "data_source_hash",
                "data_source_ipfs_hash",
                "description",
                "incentive_mechanism",
                "iocs",
                "open_source",
                "statistic_info",
                "stix_data",
                "stix_ipfs_hash",
                "tags",
                "value"
            ]
        );
        for k in [
            "cti_hash",
            "cti_name",
            "stix_data",
            "stix_ipfs_hash",
            "statistic_info",
            "description",
            "data_source_hash",
            "data_source_ipfs_hash",
            "create_time",
        ] {
            assert!(payload[k].is_string(), "{k} must be a string: {payload}");
        }
        for k in [
            "cti_type",
            "cti_traffic_type",
            "open_source",
            "data_size",
            "incentive_mechanism",
        ] {
            assert!(payload[k].is_u64(), "{k} must be an integer: {payload}");
        }
        assert!(
            payload["value"].is_f64(),
            "value must be a float: {payload}"
        );
        for k in ["tags", "iocs"] {
            assert!(
                payload[k].as_array().unwrap().iter().all(Value::is_string),
                "{k}"
            );
        }
        assert_eq!(payload["description"], "flows seen on the SDN testbed");
    }
    // Each row references two addresses: 300 rows, 600 occurrences.
    assert_eq!(occurrences, 600);

    // The task's step 2 is finished, with one CTI record per STIX record (uploading the same
    // file under the same task id reads the task back).
    let csv = dataset(300);
    let task = server.upload(&csv, "flows.csv", "task-of-cti");
    let steps = &task["data"]["task_record"]["step_status"];
    assert_eq!(steps[2]["status"], "finished", "{task}");
    assert_eq!(steps[2]["total_num"], 3);

    // Paging keeps the array shape and gives the total in a header.
    let resp = server
        .client
        .post(server.url("/data/get_local_cti_records"))
        .json(&json!({"file_hash": hash, "page": 2, "page_size": 2}))
        .send()
        .unwrap();
    assert_eq!(resp.headers()["x-total-count"], "3");
    let page = json_of(resp);
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    assert_eq!(page["data"][0]["cti_hash"], ctis[2]["cti_hash"]);
}

#[test]
fn reruns_update_but_never_duplicate_or_unpublish() {
    let node = node_with_geoip();
    let server = &node.server;
    let hash = converted(server, &dataset(250), 100);
    server.start_cti(&json!({"file_hash": hash, "cti_name": "first", "default_value": 1}));
    server.wait_cti(&hash);
    let before = server.cti_records(&hash);
    assert_eq!(before.len(), 3);
    let cti = before[1]["cti_hash"].as_str().unwrap().to_string();

    // A publisher records what the chain assigned.
    let marked = server.post_json(
        "/data/mark_cti_onchain",
        &json!({"file_hash": hash, "cti_hash": cti, "cti_id": "cti-0042", "stix_ipfs_hash": "QmStix"}),
    );
    assert_eq!(marked["code"], 200, "{marked}");
    assert_eq!(marked["data"]["onchain"], true);
    assert_eq!(marked["data"]["stix_ipfs_hash"], "QmStix");

    // Re-run with other descriptive fields.
    let again = server.start_cti(&json!({
        "file_hash": hash, "cti_name": "second", "cti_description": "updated",
        "default_value": 3, "cti_tags": ["ddos", "botnet"], "cti_traffic_type": 1, "open_source": 1
    }));
    assert_eq!(again["code"], 200, "{again}");
    server.wait_cti(&hash);
    let after = server.cti_records(&hash);
    assert_eq!(after.len(), 3, "no duplicates");
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a["cti_hash"], b["cti_hash"]);
        assert_eq!(a["create_time"], b["create_time"], "creation time kept");
        assert!(a["cti_name"].as_str().unwrap().starts_with("second ("));
        assert_eq!(a["description"], "updated");
        assert_eq!(a["tags"], json!(["ddos", "botnet"]));
        assert_eq!(a["cti_traffic_type"], 1);
        assert_eq!(a["value"], 3.0);
        assert_eq!(
            a["statistic_info"], b["statistic_info"],
            "statistics are reproducible"
        );
    }
    assert_eq!(after[1]["onchain"], true, "on-chain state never reset");
    assert_eq!(after[1]["cti_id"], "cti-0042");
    assert_eq!(after[1]["stix_ipfs_hash"], "QmStix");
    assert_eq!(after[0]["onchain"], false);
    let stix = server.stix_records(&hash);
    assert_eq!(stix[1]["onchain"], true, "the STIX record shows 已上链");
    assert_eq!(stix[0]["onchain"], false);
}

#[test]
fn without_a_database_locations_are_unknown_never_invented() {
    let server = TestServer::start(&[]);
    let hash = converted(&server, &dataset(30), 100);
    server.start_cti(&json!({"file_hash": hash, "cti_name": "x"}));
    server.wait_cti(&hash);
    let cti = server.cti_records(&hash)[0]["cti_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let stats = one(&server, "/data/get_cti_statistic_info", &hash, &cti);
    assert_eq!(stats["geoip_database"], "none");
    assert_eq!(
        stats["ips_locations_map"]["101.33.0.1"],
        "unknown,unknown,unknown"
    );
    assert_eq!(
        stats["ips_locations_map"]["192.168.1.2"],
        "private,private,private"
    );
    let record = one(&server, "/data/get_cti_record", &hash, &cti);
    assert_eq!(record["cti_name"], "x");
    assert_eq!(record["open_source"], 0);
    assert_eq!(record["incentive_mechanism"], 1);
    assert_eq!(record["value"], 0.0);
}

#[test]
fn cti_request_errors_name_the_field() {
    let server = TestServer::start(&[]);
    let raw = server.upload_ok(&dataset(10), "flows.csv");
    // No STIX records yet: a handled error, not a job that never ends.
    let v = server.start_cti(&json!({"file_hash": raw, "cti_name": "x"}));
    assert_error(&v, "has no STIX records");
    assert_eq!(server.cti_progress(&raw)["data"], Value::Null);

    let hash = converted(&server, &dataset(20), 100);
    for (body, needle) in [
        (
            json!({"file_hash": hash, "open_source": [1]}),
            "open_source",
        ),
        (
            json!({"file_hash": hash, "open_source": "yes"}),
            "open_source",
        ),
        (json!({"file_hash": hash, "open_source": 2}), "open_source"),
        (
            json!({"file_hash": hash, "default_value": "abc"}),
            "default_value",
        ),
        (
            json!({"file_hash": hash, "default_value": -1}),
            "default_value",
        ),
        (
            json!({"file_hash": hash, "default_value": {"a": 1}}),
            "default_value",
        ),
        (
            json!({"file_hash": hash, "incentive_mechanism": 7}),
            "incentive_mechanism",
        ),
        (json!({"file_hash": hash, "cti_type": "x"}), "cti_type"),
        (json!({"file_hash": hash, "cti_type": 9}), "cti_type"),
        (
            json!({"file_hash": hash, "cti_traffic_type": 4}),
            "cti_traffic_type",
        ),
        (json!({"file_hash": hash, "cti_tags": ["nope"]}), "cti_tags"),
        (json!({"file_hash": hash, "cti_name": ["x"]}), "cti_name"),
        (json!({"file_hash": "abc"}), "file_hash"),
        (json!({"file_hash": "a".repeat(64)}), "no uploaded file"),
    ] {
        let v = server.start_cti(&body);
        assert_error(&v, needle);
    }
    assert_eq!(
        server.cti_progress(&hash)["data"],
        Value::Null,
        "nothing started"
    );

    let bad = server.post_json(
        "/data/get_cti_chain_payload",
        &json!({"file_hash": hash, "cti_hash": "../etc"}),
    );
    assert_error(&bad, "cti_hash");
    let missing = server.post_json(
        "/data/get_cti_record",
        &json!({"file_hash": hash, "cti_hash": "b".repeat(64)}),
    );
    assert_error(&missing, "has no CTI record");
    let unmarked = server.post_json(
        "/data/mark_cti_onchain",
        &json!({"file_hash": hash, "cti_hash": "b".repeat(64), "cti_id": "x"}),
    );
    assert_error(&unmarked, "has no CTI record");
    let no_id = server.post_json(
        "/data/mark_cti_onchain",
        &json!({"file_hash": hash, "cti_hash": "b".repeat(64), "cti_id": ""}),
    );
    assert_error(&no_id, "cti_id");
}

/// Tests of the real binary as a process (the slow stage).
mod process {
    use super::*;

    #[test]
    fn a_killed_cti_build_resumes_and_ends_with_the_same_records() {
        // 200 STIX files of 500 rows: the CTI build reads and scans each one.
        let csv = dataset(100_000);
        let geo = tempfile::tempdir().unwrap();
        let db = geo.path().join("city.mmdb");
        write_test_geoip(&db);
        let args = ["--geoip-db", db.to_str().unwrap()];
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut server = TestServer::start_in(&dir, &args);
        let hash = converted(&server, &csv, 500);
        let body = json!({"file_hash": hash, "cti_name": "big", "default_value": 2});
        assert_eq!(server.start_cti(&body)["data"]["total_step"], 200);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let p = server.cti_progress(&hash);
            assert!(
                p["data"]["progress"] != 100,
                "the CTI build ended before it could be interrupted: {p}"
            );
            if p["data"]["current_step"].as_u64().unwrap_or(0) >= 1 {
                break;
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        server.kill();
        let server = TestServer::start_in(&dir, &args);
        let done = server.wait_cti(&hash);
        assert_eq!(
            done["records_done"], 200,
            "no record counted twice or lost: {done}"
        );
        let resumed = server.cti_records(&hash);
        assert_eq!(resumed.len(), 200);

        // An uninterrupted build elsewhere gives the same records and statistics.
        let other = TestServer::start(&args);
        converted(&other, &csv, 500);
        other.start_cti(&body);
        other.wait_cti(&hash);
        let fresh = other.cti_records(&hash);
        let key = |v: &Value| {
            (
                v["cti_hash"].as_str().unwrap().to_string(),
                v["cti_name"].as_str().unwrap().to_string(),
                v["statistic_info"].as_str().unwrap().to_string(),
            )
        };
        assert_eq!(
            resumed.iter().map(key).collect::<Vec<_>>(),
            fresh.iter().map(key).collect::<Vec<_>>()
        );
    }
}
