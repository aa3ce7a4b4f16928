//! Several nodes on one PostgreSQL database and one S3 bucket (Garage): a job converted by
//! whichever node claims it and taken over when that node is killed, TAXII pages that stay
//! exact while two nodes publish, and report replays and rate limits shared by all nodes.

use std::process::Command;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};
use serde_json::{Value, json};

use crate::common::*;

/// The flags that put a node on the shared database and bucket, with short job leases.
struct Cluster {
    database_url: String,
    flags: Vec<String>,
    _dirs: tempfile::TempDir,
    root: std::path::PathBuf,
}

impl Cluster {
    fn new() -> Self {
        let database_url =
            br_cti_store_pg::testing::schema_url(&br_cti_store_pg::testing::new_schema());
        let mut flags = vec![
            "--database-url".to_string(),
            database_url.clone(),
            "--blob-store".to_string(),
            br_cti_store_s3::testing::new_url(),
            "--job-lease-secs".to_string(),
            "2".to_string(),
            "--hd-rate".to_string(),
            "0.01".to_string(),
            "--hd-burst".to_string(),
            "3".to_string(),
        ];
        for option in br_cti_store_s3::testing::options() {
            flags.extend(["--blob-store-option".to_string(), option]);
        }
        let dirs = tempfile::tempdir().unwrap();
        Cluster {
            database_url,
            flags,
            root: dirs.path().to_path_buf(),
            _dirs: dirs,
        }
    }

    /// Node `i` (its own data directory; its records and files are the cluster's).
    fn node(&self, i: usize) -> TestServer {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        let dir = self.root.join(format!("node{i}"));
        TestServer::try_start_in_env(&dir, &flags, &[]).unwrap_or_else(|| {
            let log = std::fs::read_to_string(dir.with_extension("log")).unwrap_or_default();
            panic!("node {i} did not start:\n{log}")
        })
    }

    /// `br-cti users …` on the shared database; answers the last line of its output.
    fn users(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend(["--database-url", &self.database_url]);
        users_ok(&self.root.join("cli"), &all)
    }

    /// The node (by process id) that holds the lease of the unfinished job, if any.
    fn lease_owner_pid(&self) -> Option<u32> {
        let mut db = postgres::Client::connect(&self.database_url, postgres::NoTls).unwrap();
        let row = db
            .query_opt(
                "SELECT lease_owner FROM jobs WHERE status = 'running' ORDER BY id LIMIT 1",
                &[],
            )
            .unwrap()?;
        let owner: Option<String> = row.get(0);
        owner?.split(':').nth(1)?.parse().ok()
    }

    fn attempts(&self) -> i64 {
        let mut db = postgres::Client::connect(&self.database_url, postgres::NoTls).unwrap();
        db.query_one("SELECT max(attempts) FROM jobs", &[])
            .unwrap()
            .get(0)
    }
}

const TAXII: &str = "application/taxii+json;version=2.1";

fn inbox(server: &TestServer, user: &str, token: &str) -> String {
    let v: Value = server
        .client
        .get(server.url("/taxii2/api/collections/"))
        .basic_auth(user, Some(token))
        .header("accept", TAXII)
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["title"] == "br-cti inbox")
        .unwrap_or_else(|| panic!("no inbox in {v}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn signed(user: &str, token: &str, ts: &str, risk: &str) -> Value {
    let sign = hex::encode(Md5::digest(format!("{ts}{user}{token}").as_bytes()));
    json!({"user": user, "timestamp": ts, "sign": sign, "dataValues": [{
        "riskId": risk, "issueName": "弱口令", "issueLevel": 3, "issueIP": "10.0.0.9",
        "classify": ["主机漏洞"], "unitName": "单位甲", "startTime": "2024-06-01 08:00:00",
        "endTime": "2024-06-01 09:00:00", "dataFrom": "下级", "judgeState": "judgeStateTrue",
        "noticeState": "noticeStateNone", "rawEvent": "x", "issueSolution": "改口令"}]})
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn post_report(server: &TestServer, body: &[u8]) -> (u16, Value) {
    let resp = server
        .client
        .post(server.url("/open/api/v1/retrieval/addHiddenDanger"))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.json().unwrap())
}

/// Tests of the real binary as a process (the slow stage).
mod process {
    use super::*;

    #[test]
    fn three_nodes_share_one_database_and_one_bucket() {
        let cluster = Cluster::new();
        let mut nodes: Vec<Option<TestServer>> = (0..3).map(|i| Some(cluster.node(i))).collect();

        // 1. A dataset uploaded to node 1 is converted by whichever node claims it; that node is
        //    killed mid-job and another takes the job over when the lease ends.
        let n0 = nodes[0].as_ref().unwrap();
        // Ready: the database answers and the bucket takes an object.
        let ready = n0.get_json("/readyz");
        assert_eq!(ready["status"], "ready", "{ready}");
        assert_eq!(ready["checks"]["database"]["ok"], true, "{ready}");
        assert_eq!(ready["checks"]["blob_store"]["ok"], true, "{ready}");
        let csv = big_csv(150_000);
        let hash = n0.upload_ok(&csv, "big.csv");
        let body = json!({"file_hash": hash, "stix_compress": 100});
        assert_eq!(n0.start_stix(&body)["data"]["total_step"], 1500);
        let deadline = Instant::now() + Duration::from_secs(120);
        let owner = loop {
            let p = n0.stix_progress(&hash);
            assert!(
                p["data"]["progress"] != 100,
                "the job ended before it could be interrupted: {p}"
            );
            let done = p["data"]["current_step"].as_u64().unwrap_or(0);
            if done >= 3
                && let Some(pid) = cluster.lease_owner_pid()
            {
                break pid;
            }
            assert!(Instant::now() < deadline, "{p}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let victim = (0..3)
            .find(|&i| nodes[i].as_ref().unwrap().pid() == owner)
            .expect("the lease names one of the nodes");
        nodes[victim].as_mut().unwrap().kill();
        nodes[victim] = None;
        let survivor = nodes.iter().flatten().next().unwrap();
        let done = survivor.wait_stix(&hash);
        assert_eq!(
            done["rows_done"], 150_000,
            "no row counted twice or lost: {done}"
        );
        assert_eq!(done["files"], 1500);
        assert_eq!(cluster.attempts(), 2, "one run killed, one taken over");
        let taken_over = survivor.stix_records(&hash);
        assert_eq!(taken_over.len(), 1500);
        // An uninterrupted run on a node of its own writes exactly the same files, and the
        // bucket holds those bytes under those names.
        let alone = TestServer::start_sqlite(&[]);
        alone.upload_ok(&csv, "big.csv");
        alone.start_stix(&body);
        alone.wait_stix(&hash);
        assert_eq!(hashes(&alone.stix_records(&hash)), hashes(&taken_over));
        for r in taken_over.iter().step_by(300) {
            let bytes = read_location(r["stix_file_path"].as_str().unwrap());
            assert_eq!(sha256_hex(&bytes), r["stix_file_hash"].as_str().unwrap());
        }
        nodes[victim] = Some(cluster.node(victim));

        // A cancel sent to a node that does not run the job reaches the one that does.
        let other = nodes[1]
            .as_ref()
            .unwrap()
            .upload_ok(&big_csv(300_000), "other.csv");
        let started = nodes[1]
            .as_ref()
            .unwrap()
            .start_stix(&json!({"file_hash": other, "stix_compress": 100}));
        assert_eq!(started["code"], 200, "{started}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let runner = loop {
            if let Some(pid) = cluster.lease_owner_pid() {
                break pid;
            }
            assert!(Instant::now() < deadline, "nobody claimed the job");
            std::thread::sleep(Duration::from_millis(20));
        };
        let canceller = nodes.iter().flatten().find(|n| n.pid() != runner).unwrap();
        let v = canceller.post_json("/data/cancel_stix_process", &json!({"file_hash": other}));
        assert_eq!(v["code"], 200, "{v}");
        let ended = loop {
            let p = canceller.stix_progress(&other);
            if p["status"] == "canceled" {
                break p;
            }
            assert!(
                p["data"]["progress"] != 100,
                "finished despite the cancel: {p}"
            );
            assert!(Instant::now() < deadline, "{p}");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_job_ended(&ended, "canceled", "was canceled");

        // 2. TAXII pages through node 3 give every object exactly once while nodes 1 and 2
        //    publish into the same collection.
        let peer = cluster.users(&["add", "peer"]);
        cluster.users(&["grant", "peer", "--write", "all", "--tlp", "amber"]);
        let reader = nodes[2].as_ref().unwrap();
        let collection = inbox(reader, "peer", &peer);
        const PER_WRITER: usize = 60;
        let ids = std::sync::Mutex::new(Vec::new());
        let mut seen: Vec<String> = Vec::new();
        std::thread::scope(|s| {
            let writers: Vec<_> = (0..2)
                .map(|w| {
                    let server = nodes[w].as_ref().unwrap();
                    let (peer, collection, ids) = (&peer, &collection, &ids);
                    s.spawn(move || {
                        for i in 0..PER_WRITER {
                            let id = format!("indicator--00000000-0000-4000-8000-{w:04}{i:08}");
                            let obj = json!({"type": "indicator", "spec_version": "2.1",
                                "id": id, "created": "2024-06-01T00:00:00Z",
                                "modified": "2024-06-01T00:00:00Z", "name": format!("{w}/{i}"),
                                "pattern": "[ipv4-addr:value = '198.51.100.1']",
                                "pattern_type": "stix", "valid_from": "2024-06-01T00:00:00Z"});
                            let resp =
                                server
                                    .client
                                    .post(server.url(&format!(
                                        "/taxii2/api/collections/{collection}/objects/"
                                    )))
                                    .basic_auth("peer", Some(peer))
                                    .header("accept", TAXII)
                                    .header("content-type", TAXII)
                                    .body(json!({"objects": [obj]}).to_string())
                                    .send()
                                    .unwrap();
                            assert_eq!(resp.status(), 202);
                            ids.lock().unwrap().push(id);
                        }
                    })
                })
                .collect();
            // A client following new objects: `next` while there are more, then `added_after`
            // from the last page's X-TAXII-Date-Added-Last.
            let mut next: Option<String> = None;
            let mut added_after: Option<String> = None;
            loop {
                let finished = writers.iter().all(|w| w.is_finished());
                let mut path = format!("/taxii2/api/collections/{collection}/objects/?limit=7");
                if let Some(n) = &next {
                    path.push_str(&format!("&next={n}"));
                } else if let Some(t) = &added_after {
                    path.push_str(&format!("&added_after={t}"));
                }
                let resp = reader
                    .client
                    .get(reader.url(&path))
                    .basic_auth("peer", Some(&peer))
                    .header("accept", TAXII)
                    .send()
                    .unwrap();
                let last_added = resp
                    .headers()
                    .get("x-taxii-date-added-last")
                    .map(|h| h.to_str().unwrap().to_string());
                let v: Value = resp.json().unwrap();
                for o in v["objects"].as_array().into_iter().flatten() {
                    seen.push(o["id"].as_str().unwrap().to_string());
                }
                if v["more"] == true {
                    next = Some(v["next"].as_str().unwrap().to_string());
                } else {
                    next = None;
                    if let Some(t) = last_added {
                        added_after = Some(t);
                    }
                    if finished {
                        break;
                    }
                }
            }
        });
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "an object was served twice");
        let mut written = ids.into_inner().unwrap();
        written.sort();
        assert_eq!(unique, written, "every object exactly once");

        // 3. A signed report replayed to another node gets the first answer and stores
        //    nothing more; the same sign with another body is refused there.
        let platform = cluster.users(&["add", "platA"]);
        let ts = now_ms().to_string();
        let first = signed("platA", &platform, &ts, "R1").to_string();
        let (status, answer) = post_report(nodes[0].as_ref().unwrap(), first.as_bytes());
        assert_eq!(
            (status, answer["success"].clone()),
            (200, json!(true)),
            "{answer}"
        );
        let (status, again) = post_report(nodes[1].as_ref().unwrap(), first.as_bytes());
        assert_eq!(status, 200);
        assert_eq!(again, answer, "the first answer, from another node");
        let tampered = first.replace("单位甲", "单位乙");
        let (_, refused) = post_report(nodes[2].as_ref().unwrap(), tampered.as_bytes());
        assert_eq!(refused["errorCode"], "AUTH_REPLAY", "{refused}");
        // The rate limit (a burst of 3) counts the user's requests to every node.
        let mut codes = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let ts = (now_ms() + 1 + i as u128).to_string();
            let body = signed("platA", &platform, &ts, &format!("R{}", i + 2)).to_string();
            let (status, v) = post_report(node.as_ref().unwrap(), body.as_bytes());
            codes.push((status, v["success"].clone(), v["errorCode"].clone()));
        }
        assert!(
            codes[..2]
                .iter()
                .all(|(s, ok, _)| *s == 200 && *ok == json!(true)),
            "{codes:?}"
        );
        assert_eq!(
            (codes[2].0, &codes[2].2),
            (429, &json!("RATE_LIMITED")),
            "{codes:?}"
        );
    }

    /// Every object of a collection, as served, paging through it.
    fn collection_objects(server: &TestServer, user: &str, token: &str, title: &str) -> Vec<Value> {
        let v: Value = server
            .client
            .get(server.url("/taxii2/api/collections/"))
            .basic_auth(user, Some(token))
            .header("accept", TAXII)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let id = v["collections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["title"] == title)
            .unwrap_or_else(|| panic!("no {title} in {v}"))["id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut objects = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut path = format!("/taxii2/api/collections/{id}/objects/?limit=500");
            if let Some(n) = &next {
                path.push_str(&format!("&next={n}"));
            }
            let v: Value = server
                .client
                .get(server.url(&path))
                .basic_auth(user, Some(token))
                .header("accept", TAXII)
                .send()
                .unwrap()
                .json()
                .unwrap();
            for o in v["objects"].as_array().into_iter().flatten() {
                assert!(o["id"].is_string(), "{o}");
                objects.push(o.clone());
            }
            match v["next"].as_str() {
                Some(n) if v["more"] == true => next = Some(n.to_string()),
                _ => break,
            }
        }
        objects
    }

    /// A node's data directory moves to PostgreSQL and S3 with `migrate-store`: a node started
    /// there serves the same records, files, CTI, users and TAXII objects.
    #[test]
    fn a_data_directory_moves_to_postgres_and_s3() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir_all(&dir).unwrap();
        let peer = users_ok(&dir, &["add", "peer"]);
        users_ok(&dir, &["grant", "peer", "--write", "all", "--tlp", "amber"]);
        let mut old = TestServer::start_in(&dir, &[]);
        let sample = std::fs::read(sample("honeypot-sample.jsonl")).unwrap();
        let hash = old.upload_ok(&sample, "honeypot.jsonl");
        assert_eq!(
            old.start_stix(&json!({"file_hash": hash, "stix_type": 2, "stix_compress": 50}))["code"],
            200
        );
        old.wait_stix(&hash);
        old.start_cti(&json!({"file_hash": hash, "cti_name": "honeypot", "default_value": 1}));
        old.wait_cti(&hash);
        let ts = now_ms().to_string();
        let report = signed("peer", &peer, &ts, "M1").to_string();
        let (status, answer) = post_report(&old, report.as_bytes());
        assert_eq!(status, 200, "{answer}");
        // Wait until the publisher has put both into TAXII.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (datasets, dangers) = loop {
            let d = collection_objects(&old, "peer", &peer, "br-cti datasets");
            let h = collection_objects(&old, "peer", &peer, "br-cti hidden dangers");
            if !d.is_empty() && !h.is_empty() {
                std::thread::sleep(Duration::from_millis(500));
                let d2 = collection_objects(&old, "peer", &peer, "br-cti datasets");
                if d2.len() == d.len() {
                    break (d, h);
                }
            }
            assert!(Instant::now() < deadline, "not published");
            std::thread::sleep(Duration::from_millis(200));
        };
        let records = old.stix_records(&hash);
        let ctis = old.cti_records(&hash);
        let first_file = records[0]["stix_file_hash"].as_str().unwrap().to_string();
        let file_bytes = old.stix_file(&hash, &first_file);
        assert!(old.terminate(), "a clean stop");

        let cluster = Cluster::new();
        let bucket = cluster.flags[3].clone();
        let migrate = |extra: &[&str]| {
            let mut cmd = Command::new(BIN);
            cmd.arg("migrate-store")
                .arg("--data-dir")
                .arg(&dir)
                .arg("--database-url")
                .arg(&cluster.database_url)
                .arg("--blob-store")
                .arg(&bucket);
            for option in br_cti_store_s3::testing::options() {
                cmd.arg("--blob-store-option").arg(option);
            }
            cmd.args(extra).output().unwrap()
        };
        let out = migrate(&[]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let taxii_rows: usize = stdout
            .lines()
            .find_map(|l| l.strip_prefix("taxii_objects: "))
            .and_then(|l| l.strip_suffix(" rows"))
            .unwrap_or_else(|| panic!("{stdout}"))
            .parse()
            .unwrap();
        assert_eq!(taxii_rows, datasets.len() + dangers.len(), "{stdout}");
        // The collections' counts (the console's) and the IOC registry come along.
        assert!(stdout.contains("taxii_counts: 2 rows"), "{stdout}");
        for table in ["ioc_sightings", "iocs"] {
            let rows: usize = stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{table}: ")))
                .and_then(|l| l.strip_suffix(" rows"))
                .unwrap_or_else(|| panic!("{table}: {stdout}"))
                .parse()
                .unwrap();
            assert!(rows > 0, "{table}: {stdout}");
        }
        assert!(
            stdout.contains("CTI records pointed at the bucket"),
            "{stdout}"
        );
        // Into a database that holds data already: refused.
        let again = migrate(&[]);
        assert!(!again.status.success());
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("already holds br-cti data"),
            "{}",
            String::from_utf8_lossy(&again.stderr)
        );

        let new = cluster.node(0);
        let moved = new.stix_records(&hash);
        assert_eq!(hashes(&moved), hashes(&records));
        assert!(
            moved[0]["stix_file_path"]
                .as_str()
                .unwrap()
                .starts_with("s3://"),
            "{}",
            moved[0]
        );
        assert!(new.stix_file(&hash, &first_file) == file_bytes);
        let moved_ctis = new.cti_records(&hash);
        assert_eq!(moved_ctis.len(), ctis.len());
        for (a, b) in ctis.iter().zip(&moved_ctis) {
            assert_eq!(a["cti_hash"], b["cti_hash"]);
            assert_eq!(a["statistic_info"], b["statistic_info"]);
            assert!(b["stix_data"].as_str().unwrap().starts_with("s3://"), "{b}");
            assert_eq!(
                read_location(b["stix_data"].as_str().unwrap()),
                read_location(a["stix_data"].as_str().unwrap())
            );
        }
        // The console of the new node counts the same objects.
        let page = new
            .client
            .get(new.url("/console/taxii"))
            .header("accept", "text/html")
            .send()
            .unwrap()
            .text()
            .unwrap();
        for n in [datasets.len(), dangers.len()] {
            // As the page writes numbers: thousands separated by commas.
            let digits = n.to_string();
            let mut shown = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i).is_multiple_of(3) {
                    shown.push(',');
                }
                shown.push(c);
            }
            assert!(
                page.contains(&format!("<td class=\"num\">{shown}</td>")),
                "{n}: {page}"
            );
        }
        // The same users and tokens, the same TAXII objects in the same order (the datasets'
        // read from the STIX files, now in the bucket).
        assert_eq!(
            collection_objects(&new, "peer", &peer, "br-cti datasets"),
            datasets
        );
        assert_eq!(
            collection_objects(&new, "peer", &peer, "br-cti hidden dangers"),
            dangers
        );
        // The replay claim moved too: the same request is answered as before.
        let (_, replayed) = post_report(&new, report.as_bytes());
        assert_eq!(replayed, answer);
    }
}
