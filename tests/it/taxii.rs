//! TAXII 2.1 over HTTP: the OASIS taxii2-client against the node, then the protocol's edges
//! (media types, cursors, filters, auth, DELETE, versions) and the node's own publications.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use md5::{Digest, Md5};
use serde_json::{Value, json};

fn uuid5(name: &str) -> String {
    // The collection ids: UUIDv5 (URL namespace) of "br-cti:taxii:<name>".
    let out = Command::new(oracle_python())
        .args([
            "-c",
            &format!("import uuid;print(uuid.uuid5(uuid.NAMESPACE_URL,'br-cti:taxii:{name}'))"),
        ])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Node {
    server: TestServer,
    dir: std::path::PathBuf,
    peer: String,
    reader: String,
    _tmp: tempfile::TempDir,
}

fn node(args: &[&str]) -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    let peer = users_ok(&dir, &["add", "peer"]);
    users_ok(&dir, &["grant", "peer", "--write", "all", "--tlp", "amber"]);
    let reader = users_ok(&dir, &["add", "reader"]);
    // Hidden dangers are TLP:AMBER: the reader of these tests reads up to that.
    users_ok(&dir, &["grant", "reader", "--tlp", "amber"]);
    Node {
        server: TestServer::start_in(&dir, args),
        dir,
        peer,
        reader,
        _tmp: tmp,
    }
}

const TAXII: &str = "application/taxii+json;version=2.1";

fn taxii_get(s: &TestServer, user: &str, token: &str, path: &str) -> reqwest::blocking::Response {
    s.client
        .get(s.url(path))
        .basic_auth(user, Some(token))
        .header("accept", TAXII)
        .send()
        .unwrap()
}

fn collection_path(id: &str, rest: &str) -> String {
    format!("/taxii2/api/collections/{id}/{rest}")
}

fn report_hidden_danger(n: &Node, risk: &str, notice: &str) {
    let ts = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis())
    .to_string();
    let sign = hex::encode(Md5::digest(format!("{ts}peer{}", n.peer).as_bytes()));
    let body = json!({"user": "peer", "timestamp": ts, "sign": sign, "dataValues": [{
        "riskId": risk, "issueName": "弱口令 CVE-2024-0001", "issueLevel": 3, "issueIP": "10.0.0.9",
        "classify": ["主机漏洞"], "unitName": "单位甲", "startTime": "2024-06-01 08:00:00",
        "endTime": "2024-06-01 09:00:00", "dataFrom": "下级", "judgeState": "judgeStateTrue",
        "noticeState": notice, "rawEvent": "x", "issueSolution": "改口令"}]});
    let v = n
        .server
        .post_json("/open/api/v1/retrieval/addHiddenDanger", &body);
    assert_eq!(v["success"], true, "{v}");
}

/// Polls a collection's manifest until it holds at least `n` object versions.
fn wait_for(n: &Node, collection: &str, query: &str, at_least: usize) -> Value {
    let path = format!("{}?{query}", collection_path(collection, "manifest/"));
    poll(n, &path, "objects", at_least)
}

/// Reads `path` until the array under `key` has at least `at_least` items (30 s at most).
fn poll(n: &Node, path: &str, key: &str, at_least: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = taxii_get(&n.server, "reader", &n.reader, path);
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().unwrap();
        if v[key].as_array().map_or(0, Vec::len) >= at_least {
            return v;
        }
        assert!(Instant::now() < deadline, "{path} did not fill: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn conversions_and_reports_appear_without_a_manual_step() {
    let n = node(&[]);
    let hd = uuid5("hidden-dangers");
    report_hidden_danger(&n, "rev", "noticeStateNone");
    let v = wait_for(&n, &hd, "match[type]=sighting", 1);
    let sighting_id = v["objects"][0]["id"].as_str().unwrap().to_string();
    // A new revision of the report is a new version of its sighting.
    std::thread::sleep(Duration::from_millis(5));
    report_hidden_danger(&n, "rev", "noticeStateFinished");
    let versions = poll(
        &n,
        &collection_path(&hd, &format!("objects/{sighting_id}/versions/")),
        "versions",
        2,
    );
    assert_eq!(
        versions["versions"].as_array().unwrap().len(),
        2,
        "{versions}"
    );
    let latest: Value = taxii_get(
        &n.server,
        "reader",
        &n.reader,
        &collection_path(&hd, &format!("objects/{sighting_id}/")),
    )
    .json()
    .unwrap();
    let ext = latest["objects"][0]["extensions"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(ext["notice_state"], "noticeStateFinished");
    assert_eq!(ext["revision"], 2);

    // Two files of the same dataset share their producer objects: each is there once.
    let datasets = uuid5("datasets");
    let sample = std::fs::read(sample("honeypot-sample.jsonl")).unwrap();
    let hash = n.server.upload_ok(&sample, "h.jsonl");
    n.server
        .start_stix(&json!({"file_hash": hash, "stix_compress": 4}));
    n.server.wait_stix(&hash);
    let manifest = wait_for(&n, &datasets, "limit=10000&match[type]=identity", 1);
    assert_eq!(
        manifest["objects"].as_array().unwrap().len(),
        1,
        "deduplicated by id and version"
    );
}

/// The ids and markings of every object a user receives from a collection, through every
/// read endpoint: objects and manifest pages (one object per page, following `next`), with a
/// type filter, and each object by id and its versions.
fn everything_visible(n: &Node, user: &str, token: &str, collection: &str) -> Vec<(String, Value)> {
    let get = |path: &str| -> Value {
        let resp = taxii_get(&n.server, user, token, path);
        let status = resp.status();
        let v: Value = resp.json().unwrap_or(Value::Null);
        assert!(status == 200 || status == 404, "{path}: {status} {v}");
        v
    };
    let page_all = |rest: &str, key: &str| -> Vec<Value> {
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let mut path = collection_path(collection, rest);
            path.push_str(if path.contains('?') { "&" } else { "?" });
            path.push_str("limit=1");
            if let Some(n) = &next {
                path.push_str(&format!("&next={n}"));
            }
            let v = get(&path);
            let items = v[key].as_array().cloned().unwrap_or_default();
            assert!(items.len() <= 1, "{v}");
            out.extend(items);
            match v["next"].as_str() {
                Some(n) if v["more"] == true => next = Some(n.to_string()),
                _ => break,
            }
        }
        out
    };
    let mut seen: Vec<(String, Value)> = page_all("objects/", "objects")
        .into_iter()
        .map(|o| {
            (
                o["id"].as_str().unwrap().to_string(),
                o["object_marking_refs"].clone(),
            )
        })
        .collect();
    let manifest: Vec<String> = page_all("manifest/", "objects")
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    // Read after the objects: the publisher may have appended more meanwhile (never before).
    let objects: Vec<String> = seen.iter().map(|(id, _)| id.clone()).collect();
    assert!(
        manifest.starts_with(&objects),
        "the manifest lists what the objects endpoint gives, in the same order:\n{manifest:?}\n{objects:?}"
    );
    for ty in ["indicator", "observed-data", "sighting"] {
        for o in page_all(&format!("objects/?match[type]={ty}"), "objects") {
            seen.push((
                o["id"].as_str().unwrap().to_string(),
                o["object_marking_refs"].clone(),
            ));
        }
    }
    seen
}

/// A user granted TLP:GREEN never receives an object marked AMBER: not in a page, a filtered
/// page, the manifest, an object read by id or its versions; a user granted AMBER reads both;
/// anonymous clients read TLP:CLEAR only.
#[test]
fn readers_see_objects_up_to_their_tlp_level() {
    let n = node(&["--taxii-anonymous"]);
    let green = users_ok(&n.dir, &["add", "green"]);
    let datasets = uuid5("datasets");
    let hd = uuid5("hidden-dangers");
    // The same honeypot data converted twice (the files differ by their marking), and a
    // hidden danger (AMBER by default).
    let sample = std::fs::read(sample("honeypot-sample.jsonl")).unwrap();
    let convert = |blank_lines: usize, tlp: &str| {
        let bytes = [&sample[..], "\n".repeat(blank_lines).as_bytes()].concat();
        let hash = n.server.upload_ok(&bytes, &format!("{tlp}.jsonl"));
        let v = n
            .server
            .start_stix(&json!({"file_hash": hash, "stix_type": 2, "tlp": tlp}));
        assert_eq!(v["code"], 200, "{v}");
        n.server.wait_stix(&hash);
    };
    convert(1, "green");
    convert(2, "AMBER");
    report_hidden_danger(&n, "tlp", "noticeStateNone");
    wait_for(&n, &hd, "match[type]=sighting", 1);
    let amber = json!(["marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421"]);
    let green_marking = json!(["marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"]);
    // The AMBER reader: both datasets' observations (wait for the publisher).
    let deadline = Instant::now() + Duration::from_secs(30);
    let all = loop {
        let all = everything_visible(&n, "reader", &n.reader, &datasets);
        let amber_obs = all.iter().filter(|(_, m)| *m == amber).count();
        if amber_obs > 0 && all.iter().any(|(_, m)| *m == green_marking) {
            break all;
        }
        assert!(Instant::now() < deadline, "not published: {all:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let amber_ids: Vec<&String> = all
        .iter()
        .filter(|(_, m)| *m == amber)
        .map(|(id, _)| id)
        .collect();
    assert!(
        amber_ids.iter().any(|id| id.starts_with("indicator--")),
        "{amber_ids:?}"
    );
    for collection in [&datasets, &hd] {
        let seen = everything_visible(&n, "green", &green, collection);
        for (id, marking) in &seen {
            assert_ne!(*marking, amber, "{id} reached a TLP:GREEN reader");
        }
        if *collection == hd {
            assert!(
                seen.iter().all(|(id, _)| !id.starts_with("sighting--")),
                "{seen:?}"
            );
        } else {
            assert!(seen.iter().any(|(_, m)| *m == green_marking), "{seen:?}");
        }
    }
    // A platform whose reports are marked GREEN: its next finding reaches the GREEN reader
    // (the earlier, AMBER one still does not).
    users_ok(&n.dir, &["grant", "peer", "--report-tlp", "green"]);
    report_hidden_danger(&n, "tlp-green", "noticeStateNone");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = everything_visible(&n, "green", &green, &hd);
        let sightings: Vec<&(String, Value)> = seen
            .iter()
            .filter(|(id, _)| id.starts_with("sighting--"))
            .collect();
        if !sightings.is_empty() {
            assert!(
                sightings.iter().all(|(_, m)| *m == green_marking),
                "{seen:?}"
            );
            assert!(seen.iter().all(|(_, m)| *m != amber), "{seen:?}");
            break;
        }
        assert!(Instant::now() < deadline, "not published: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // By id and its versions: an AMBER object is not found for the GREEN reader.
    for id in amber_ids.iter().take(5) {
        for rest in [format!("objects/{id}/"), format!("objects/{id}/versions/")] {
            let resp = taxii_get(
                &n.server,
                "green",
                &green,
                &collection_path(&datasets, &rest),
            );
            assert_eq!(resp.status(), 404, "{rest}");
        }
    }
    // Anonymous clients: TLP:CLEAR only (the producer objects and the marking-definitions).
    let anonymous: Value = n
        .server
        .client
        .get(
            n.server
                .url(&collection_path(&datasets, "objects/?limit=10000")),
        )
        .header("accept", TAXII)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let objects = anonymous["objects"].as_array().unwrap();
    assert!(!objects.is_empty());
    for o in objects {
        let clear = o.get("object_marking_refs").is_none_or(|m| {
            *m == json!(["marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487"])
        });
        assert!(clear, "{o}");
    }
    // Granting AMBER lets the user read the rest.
    users_ok(&n.dir, &["grant", "green", "--tlp", "amber"]);
    let now = everything_visible(&n, "green", &green, &datasets);
    assert!(now.iter().any(|(_, m)| *m == amber));
}

#[test]
fn anonymous_reading_only_when_the_operator_allows_it() {
    let closed = node(&[]);
    let url = closed.server.url("/taxii2/api/collections/");
    assert_eq!(closed.server.client.get(&url).send().unwrap().status(), 401);

    let open = node(&["--taxii-anonymous"]);
    let v: Value = open
        .server
        .client
        .get(open.server.url("/taxii2/api/collections/"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let ids: Vec<&str> = v["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [uuid5("datasets"), uuid5("hidden-dangers")],
        "the inbox is not shown"
    );
    let inbox = collection_path(&uuid5("inbox"), "objects/");
    assert_eq!(
        open.server
            .client
            .get(open.server.url(&inbox))
            .send()
            .unwrap()
            .status(),
        404
    );
    let post = open
        .server
        .client
        .post(open.server.url(&inbox))
        .header("content-type", TAXII)
        .body("{\"objects\":[]}")
        .send()
        .unwrap();
    assert_eq!(post.status(), 404, "anonymous clients never write");
}

#[test]
fn one_instant_written_three_ways_is_one_version() {
    let n = node(&[]);
    let s = &n.server;
    let inbox = uuid5("inbox");
    let id = "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f";
    for (i, modified) in [
        "2024-06-01T08:00:00Z",
        "2024-06-01T08:00:00.000Z",
        "2024-06-01T16:00:00+08:00",
    ]
    .iter()
    .enumerate()
    {
        let obj = json!({"type": "indicator", "spec_version": "2.1", "id": id,
            "created": "2024-06-01T00:00:00Z", "modified": modified, "name": format!("way {i}"),
            "pattern": "[ipv4-addr:value = '198.51.100.1']", "pattern_type": "stix",
            "valid_from": "2024-06-01T00:00:00Z"});
        let resp = s
            .client
            .post(s.url(&collection_path(&inbox, "objects/")))
            .basic_auth("peer", Some(&n.peer))
            .header("accept", TAXII)
            .header("content-type", TAXII)
            .body(json!({"objects": [obj]}).to_string())
            .send()
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    let versions: Value = taxii_get(
        s,
        "reader",
        &n.reader,
        &collection_path(&inbox, &format!("objects/{id}/versions/")),
    )
    .json()
    .unwrap();
    assert_eq!(
        versions["versions"].as_array().map(Vec::len),
        Some(1),
        "{versions}"
    );
    // A match[version] written another way finds it.
    let found: Value = taxii_get(
        s,
        "reader",
        &n.reader,
        &collection_path(
            &inbox,
            &format!("objects/{id}/?match[version]=2024-06-01T16:00:00%2B08:00"),
        ),
    )
    .json()
    .unwrap();
    assert_eq!(found["objects"][0]["name"], "way 0", "{found}");
}

/// `--taxii-max-content-length` is what the API root advertises and what a POST may send.
#[test]
fn the_largest_post_is_configurable_and_advertised() {
    let n = node(&["--taxii-max-content-length", "2048"]);
    let root: Value = taxii_get(&n.server, "peer", &n.peer, "/taxii2/api/")
        .json()
        .unwrap();
    assert_eq!(root["max_content_length"], 2048, "{root}");
    let objects: Vec<Value> = (0..20)
        .map(|i| {
            json!({"type": "ipv4-addr", "spec_version": "2.1",
                   "id": format!("ipv4-addr--{}", uuid5(&format!("a{i}"))), "value": format!("203.0.113.{i}")})
        })
        .collect();
    let body = json!({ "objects": objects }).to_string();
    assert!(body.len() > 2048);
    let resp = n
        .server
        .client
        .post(n.server.url(&collection_path(&uuid5("inbox"), "objects/")))
        .basic_auth("peer", Some(&n.peer))
        .header("accept", TAXII)
        .header("content-type", TAXII)
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 413);
    let v: Value = resp.json().unwrap();
    assert!(
        v["description"]
            .as_str()
            .unwrap()
            .contains("--taxii-max-content-length"),
        "{v}"
    );
}

/// Tests of the real binary as a process (the slow stage).
mod process {
    use super::*;

    #[test]
    fn taxii2_client_drives_the_server() {
        let n = node(&[]);
        let (inbox, datasets, hd) = (uuid5("inbox"), uuid5("datasets"), uuid5("hidden-dangers"));
        let sample = std::fs::read(sample("honeypot-sample.jsonl")).unwrap();
        let hash = n.server.upload_ok(&sample, "honeypot.jsonl");
        n.server
            .start_stix(&json!({"file_hash": hash, "stix_compress": 4, "stix_type": 2}));
        n.server.wait_stix(&hash);
        report_hidden_danger(&n, "r1", "noticeStateNone");
        wait_for(&n, &datasets, "limit=10000", 30);
        wait_for(&n, &hd, "", 6);

        let r = run_oracle(
            "taxii.py",
            &[&n.server.base, "peer", &n.peer, &inbox, &datasets, &hd],
        );
        assert_eq!(r["title"], "br-cti TAXII 2.1");
        assert_eq!(
            r["api_roots"],
            json!([format!("{}/taxii2/api/", n.server.base)])
        );
        assert_eq!(r["versions"], json!([TAXII]));
        assert_eq!(r["collections"][&inbox]["can_write"], true);
        assert_eq!(r["collections"][&datasets]["can_write"], false);
        assert_eq!(r["collections"][&hd]["can_read"], true);
        let s0 = &r["statuses"][0];
        assert_eq!(
            (
                s0["status"].as_str(),
                s0["total"].as_u64(),
                s0["success"].as_u64(),
                s0["failure"].as_u64()
            ),
            (Some("complete"), Some(5004), Some(5000), Some(4)),
            "{s0}"
        );
        let messages = s0["failures"].to_string();
        for needle in ["UUID", "spec_version", "indicator--", "before"] {
            assert!(messages.contains(needle), "{needle}: {messages}");
        }
        assert_eq!(r["statuses"][1]["success"], 5000);
        assert_eq!(
            r["paged"],
            json!({"pages": 10, "count": 10000, "distinct": 10000, "all_sent": true}),
            "every object exactly once"
        );
        assert_eq!(r["manifest_count"], 10000);
        assert_eq!(
            r["versions_of_one"],
            json!(["2024-01-01T00:00:00.000Z", "2024-06-01T00:00:00.000Z"])
        );
        assert_eq!(r["last"], json!(["updated"]));
        assert_eq!(r["first"], json!(["oracle indicator 7"]));
        assert_eq!(r["all"], 2);
        assert_eq!(r["at"], json!(["oracle indicator 7"]));
        assert_eq!(r["by_type"], 10);
        assert_eq!(r["by_other_type"], 0);
        assert_eq!(r["by_id"].as_array().unwrap().len(), 2);
        assert_eq!(r["spec_21"], 5);
        assert_eq!(r["added_after_first"], true);
        assert_eq!(r["deleted_gone"], true);
        assert!(r["datasets_objects"].as_u64().unwrap() >= 30, "{r}");
        assert_eq!(r["datasets_write"], "refused");
        assert_eq!(
            r["hidden_danger_types"],
            json!([
                "extension-definition",
                "identity",
                "ipv4-addr",
                "marking-definition",
                "note",
                "observed-data",
                "sighting",
                "vulnerability"
            ])
        );
        assert_eq!(r["bad_password"], 401);
    }

    #[test]
    fn protocol_edges_media_types_cursors_filters_auth() {
        let n = node(&["--api-token", "operator-secret"]);
        let s = &n.server;
        let inbox = uuid5("inbox");
        let objects_path = collection_path(&inbox, "objects/");
        let post = |user: &str, token: &str, ctype: &str, body: &Value| {
            s.client
                .post(s.url(&objects_path))
                .basic_auth(user, Some(token))
                .header("accept", TAXII)
                .header("content-type", ctype)
                .body(body.to_string())
                .send()
                .unwrap()
        };
        let objs: Vec<Value> = (0..25)
            .map(|i| {
                json!({"type": "ipv4-addr", "spec_version": "2.1",
                       "id": format!("ipv4-addr--{}", uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, format!("{i}").as_bytes())),
                       "value": format!("198.51.100.{i}")})
            })
            .collect();
        let resp = post("peer", &n.peer, TAXII, &json!({"objects": objs}));
        assert_eq!(resp.status(), 202);
        let status: Value = resp.json().unwrap();
        assert_eq!(status["success_count"], 25);
        // The status resource is readable afterwards.
        let st = taxii_get(
            s,
            "peer",
            &n.peer,
            &format!("/taxii2/api/status/{}/", status["id"].as_str().unwrap()),
        );
        assert_eq!(st.status(), 200);

        // 415 wrong content type; 406 wrong accept; TAXII error shape.
        let resp = post("peer", &n.peer, "application/json", &json!({"objects": []}));
        assert_eq!(resp.status(), 415);
        assert_eq!(resp.headers()["content-type"], TAXII);
        let e: Value = resp.json().unwrap();
        assert_eq!(e["http_status"], "415");
        assert!(e["title"].is_string() && e["description"].is_string());
        let resp = s
            .client
            .get(s.url(&objects_path))
            .basic_auth("peer", Some(&n.peer))
            .header("accept", "text/html")
            .send()
            .unwrap();
        assert_eq!(resp.status(), 406);
        let resp = s
            .client
            .get(s.url("/taxii2/"))
            .basic_auth("peer", Some(&n.peer))
            .header("accept", "application/taxii+json;version=2.0")
            .send()
            .unwrap();
        assert_eq!(resp.status(), 406);

        // Auth: none, wrong, a reader cannot write, the operator's bearer token can.
        assert_eq!(
            s.client.get(s.url("/taxii2/")).send().unwrap().status(),
            401
        );
        assert_eq!(taxii_get(s, "peer", "nope", "/taxii2/").status(), 401);
        assert_eq!(
            post("reader", &n.reader, TAXII, &json!({"objects": []})).status(),
            403
        );
        let resp = s
            .client
            .get(s.url(&objects_path))
            .bearer_auth(&n.reader)
            .header("accept", TAXII)
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "a user's token works as a bearer token");
        let resp = s
            .client
            .get(s.url(&objects_path))
            .bearer_auth("operator-secret")
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        let datasets_post = s
            .client
            .post(s.url(&collection_path(&uuid5("datasets"), "objects/")))
            .basic_auth("peer", Some(&n.peer))
            .header("content-type", TAXII)
            .body(json!({"objects": []}).to_string())
            .send()
            .unwrap();
        assert_eq!(
            datasets_post.status(),
            403,
            "the node's own collections are read-only"
        );
        assert_eq!(
            taxii_get(
                s,
                "peer",
                &n.peer,
                &collection_path("00000000-0000-0000-0000-000000000000", "")
            )
            .status(),
            404
        );

        // Paging with a cursor, the date headers with microseconds.
        let resp = taxii_get(s, "reader", &n.reader, &format!("{objects_path}?limit=10"));
        let first = resp.headers()["x-taxii-date-added-first"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(first.len(), "2024-06-01T00:00:00.000000Z".len(), "{first}");
        let page: Value = resp.json().unwrap();
        assert_eq!(page["more"], true);
        assert_eq!(page["objects"].as_array().unwrap().len(), 10);
        let next = page["next"].as_str().unwrap().to_string();
        // Bad cursors and filters: 400 with the TAXII error shape.
        for bad in [
            "next=garbage",
            "limit=0",
            "limit=x",
            "added_after=yesterday",
            "match[version]=newest",
            "match[spec_version]=3.0",
            "match[colour]=red",
        ] {
            let resp = taxii_get(s, "reader", &n.reader, &format!("{objects_path}?{bad}"));
            assert_eq!(resp.status(), 400, "{bad}");
            assert_eq!(resp.json::<Value>().unwrap()["http_status"], "400");
        }

        // The cursor holds no server state: it works after a restart.
        let dir = n.dir.clone();
        let Node {
            server,
            peer,
            reader,
            _tmp,
            ..
        } = n;
        drop(server);
        let s = TestServer::start_in(&dir, &["--api-token", "operator-secret"]);
        let resp = taxii_get(
            &s,
            "reader",
            &reader,
            &format!("{objects_path}?limit=10&next={next}"),
        );
        assert_eq!(resp.status(), 200);
        let page2: Value = resp.json().unwrap();
        let ids = |p: &Value| -> Vec<String> {
            p["objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            ids(&page2),
            objs[10..20]
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        );
        // ... and on another node sharing the same database.
        let twin = TestServer::start_in(&dir, &["--api-token", "operator-secret"]);
        let resp = taxii_get(
            &twin,
            "reader",
            &reader,
            &format!("{objects_path}?limit=10&next={next}"),
        );
        assert_eq!(ids(&resp.json::<Value>().unwrap()), ids(&page2));
        drop(twin);

        // DELETE (writers only), then 404; versions of an unversioned object: its date_added.
        let victim = objs[0]["id"].as_str().unwrap();
        let path = collection_path(&inbox, &format!("objects/{victim}/"));
        let versions = taxii_get(&s, "reader", &reader, &format!("{path}versions/"));
        assert_eq!(versions.status(), 200);
        assert_eq!(
            versions.json::<Value>().unwrap()["versions"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let del = |user: &str, token: &str| {
            s.client
                .delete(s.url(&path))
                .basic_auth(user, Some(token))
                .header("accept", TAXII)
                .send()
                .unwrap()
                .status()
        };
        assert_eq!(del("reader", &reader), 403);
        assert_eq!(del("peer", &peer), 200);
        assert_eq!(del("peer", &peer), 404);
        assert_eq!(taxii_get(&s, "reader", &reader, &path).status(), 404);
        assert_eq!(
            taxii_get(&s, "reader", &reader, &format!("{path}versions/")).status(),
            404
        );
    }

    #[test]
    fn unauthorised_bodies_are_not_read_and_the_answer_arrives() {
        let n = node(&[]);
        let s = &n.server;
        let inbox = "59007f81-b7cc-590b-8357-bdbeb2ef1ecd";
        let big = vec![b' '; 20 << 20];
        let rss_before = s.peak_rss_mib();
        for _ in 0..5 {
            let resp = s
                .client
                .post(s.url(&collection_path(inbox, "objects/")))
                .header("accept", TAXII)
                .header("content-type", TAXII)
                .basic_auth("nobody", Some("wrong"))
                .body(big.clone())
                .send()
                .expect("the 401 reaches the client");
            assert_eq!(resp.status(), 401);
        }
        let grown = s.peak_rss_mib() - rss_before;
        assert!(
            grown < 40.0,
            "five unauthorised 20 MiB bodies grew the node by {grown:.0} MiB"
        );
    }
}

/// An IOC that datasets keep showing is one indicator whose versions grow: a publication that
/// widens its window or raises its confidence is a new version (same id and `created`, later
/// `modified`), with `valid_from` its first sighting, `valid_until` its last plus the node's
/// validity, and `confidence` the highest of its datasets' types. Pages give the latest
/// version; `match[version]=all` and the versions endpoint give every one. A dataset that
/// adds nothing to what is known (inside the window, no higher confidence) adds no version.
/// Each file comes with a grouping named after its dataset.
#[test]
fn an_ioc_seen_again_is_a_new_version_of_one_indicator() {
    let n = node(&[
        "--indicator-valid-days",
        "7",
        "--indicator-confidence",
        "5=90,3=50",
    ]);
    let datasets = uuid5("datasets");
    let pattern = "[ipv4-addr:value = '8.8.8.8']";
    let convert_with = |csv: &str, name: &str, stix_type: u8, valid_days: Option<u32>| {
        let hash = n.server.upload_ok(csv.as_bytes(), name);
        let mut body = json!({"file_hash": hash, "stix_type": stix_type});
        if let Some(days) = valid_days {
            body["stix_indicator_valid_days"] = json!(days);
        }
        let v = n.server.start_stix(&body);
        assert_eq!(v["code"], 200, "{v}");
        n.server.wait_stix(&hash);
        hash
    };
    let convert = |csv: &str, name: &str, stix_type: u8| {
        convert_with(csv, name, stix_type, None);
    };
    let get = |rest: &str| -> Value {
        let resp = taxii_get(
            &n.server,
            "reader",
            &n.reader,
            &collection_path(&datasets, rest),
        );
        assert_eq!(resp.status(), 200, "{rest}");
        resp.json().unwrap()
    };
    // The versions of 8.8.8.8's indicator on a page of indicators.
    let versions_on = |query: &str| -> Vec<Value> {
        get(&format!("objects/?match[type]=indicator{query}"))["objects"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|o| o["pattern"] == pattern)
            .collect()
    };
    // Waits until the latest version is other than `before` (and answers it).
    let next_version = |before: Option<&Value>| -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(latest) = versions_on("").pop()
                && Some(&latest) != before
            {
                return latest;
            }
            assert!(Instant::now() < deadline, "no new version of the indicator");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Honeypot data (confidence 80 by default) sees it on 1 June 2024, twice.
    convert(
        "time,src,dst,protocol\n2024-06-01T10:00:00Z,8.8.8.8,192.0.2.7,tcp\n\
         2024-06-01T11:30:00Z,8.8.8.8,192.0.2.7,tcp\n",
        "honeypot.csv",
        2,
    );
    let first = next_version(None);
    // The file's grouping names the dataset and lists its objects, the indicator among them.
    let groupings = get("objects/?match[type]=grouping")["objects"].clone();
    assert_eq!(groupings.as_array().map(Vec::len), Some(1), "{groupings}");
    assert_eq!(groupings[0]["name"], "honeypot.csv, STIX file 1");
    assert!(
        groupings[0]["object_refs"]
            .as_array()
            .unwrap()
            .contains(&first["id"]),
        "{groupings}"
    );
    assert_eq!(first["created"], "2026-11-23T00:00:00.000Z", "{first}");
    assert_eq!(
        first["valid_from"], "2024-06-01T10:00:00.000000Z",
        "{first}"
    );
    assert_eq!(
        first["valid_until"], "2024-06-08T11:30:00.000000Z",
        "{first}"
    );
    assert_eq!(first["confidence"], 80, "{first}");
    assert!(
        first["modified"].as_str().unwrap() > first["created"].as_str().unwrap(),
        "{first}"
    );
    // Open-source intelligence (90 by the flag) sees it again on 3 June.
    convert(
        "time,src,dst\n2024-06-03T09:00:00Z,8.8.8.8,192.0.2.9\n",
        "osint.csv",
        5,
    );
    let second = next_version(Some(&first));
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["created"], first["created"]);
    assert!(
        second["modified"].as_str() > first["modified"].as_str(),
        "{second}"
    );
    assert_eq!(
        second["valid_from"], "2024-06-01T10:00:00.000000Z",
        "{second}"
    );
    assert_eq!(
        second["valid_until"], "2024-06-10T09:00:00.000000Z",
        "{second}"
    );
    assert_eq!(second["confidence"], 90, "{second}");
    // Botnet data (50) inside the window: no new version.
    convert(
        "time,src,dst\n2024-06-02T00:00:00Z,8.8.8.8,192.0.2.10\n",
        "botnet.csv",
        3,
    );
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The botnet file is published when its sighting is (the indicator rides along).
    while !get("objects/?match[type]=sighting")["objects"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| s["first_seen"] == "2024-06-02T00:00:00Z"))
    {
        assert!(
            Instant::now() < deadline,
            "the botnet file was not published: {}",
            get("objects/?match[type]=sighting")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for query in ["&match[version]=all", ""] {
        all.push(versions_on(query));
    }
    assert_eq!(
        all[0],
        [first.clone(), second.clone()],
        "every version, oldest first"
    );
    assert_eq!(
        all[1],
        std::slice::from_ref(&second),
        "the latest by default"
    );
    let id = second["id"].as_str().unwrap();
    let listed = get(&format!("objects/{id}/versions/"));
    assert_eq!(
        listed["versions"],
        json!([first["modified"], second["modified"]]),
        "{listed}"
    );
    // A conversion that asks its indicators to stay valid 60 days: inside the window, but a
    // later `valid_until`, so a new version.
    let hash = convert_with(
        "time,src,dst\n2024-06-02T00:00:00Z,8.8.8.8,192.0.2.11\n",
        "long.csv",
        3,
        Some(60),
    );
    let third = next_version(Some(&second));
    assert_eq!(
        third["valid_from"], "2024-06-01T10:00:00.000000Z",
        "{third}"
    );
    assert_eq!(
        third["valid_until"], "2024-08-01T00:00:00.000000Z",
        "{third}"
    );
    assert_eq!(third["confidence"], 90, "{third}");
    // The field is bounded and named.
    for bad in [json!(0), json!(3651), json!("many")] {
        let v = n
            .server
            .start_stix(&json!({"file_hash": hash, "stix_indicator_valid_days": bad}));
        assert_error(&v, "stix_indicator_valid_days");
    }
    // Every version passes the OASIS validator.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("versions.jsonl");
    std::fs::write(&path, format!("{first}\n{second}\n{third}\n")).unwrap();
    let report = validate_stix(&[path]);
    assert_eq!(report["errors"], json!([]), "{report}");
}
