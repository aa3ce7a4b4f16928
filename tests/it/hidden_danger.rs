//! The hidden-danger report interface over HTTP: users, signatures, every validation rule and
//! error code, replay, upserts with revisions, limits, reading back and the STIX export. After
//! every refused request, the stored state is shown unchanged.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use md5::{Digest, Md5};
use serde_json::{Value, json};

const ADD: &str = "/open/api/v1/retrieval/addHiddenDanger";

/// `br-cti users add NAME`: the token is the last line of standard output.
fn add_user(dir: &Path, name: &str) -> String {
    let token = users_ok(dir, &["add", name]);
    assert_eq!(token.len(), 64, "{token}");
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    token
}

fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A signed request body. The sign does not cover the body, so every request gets its own
/// timestamp (milliseconds, sent as a number): two bodies under one timestamp are a replay.
fn signed(user: &str, token: &str, items: Value) -> Value {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(0);
    let now = now_secs() * 1000;
    let ts = LAST
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
            Some((last + 1).max(now))
        })
        .map(|last| (last + 1).max(now))
        .unwrap()
        .to_string();
    json!({"user": user, "timestamp": ts.parse::<i64>().unwrap(), "sign": md5_hex(&format!("{ts}{user}{token}")), "dataValues": items})
}

fn item(risk: &str) -> Value {
    json!({
        "riskId": risk, "issueName": "Apache Log4j2 远程代码执行漏洞 CVE-2021-44228", "issueLevel": 4,
        "issueIP": "10.20.30.40", "issuePort": 8080, "classify": ["主机漏洞", "WEB漏洞"],
        "issueDescription": "JNDI 注入", "issueSolution": "升级到 2.17.1",
        "unitName": "安恒电子商务有限公司", "assetDomain": ["shop.example.com"],
        "assetIpv4": ["10.20.30.40", "10.20.30.41"], "assetIpv6": ["2001:db8::40"],
        "assetMac": ["00-1A-2B-3C-4D-5E"], "startTime": "2024-06-01 08:00:00",
        "endTime": "2024-06-02 18:30:00", "discoverFactory": "安恒", "eventFrom": "扫描",
        "dataFrom": "省级平台", "judgeState": "judgeStateTrue", "noticeState": "noticeStateNone",
        "rawEvent": "{\"vuln\": \"log4shell\",  \"score\": 10.0}"
    })
}

struct Node {
    server: TestServer,
    dir: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

fn node(args: &[&str]) -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir_all(&dir).unwrap();
    Node {
        server: TestServer::start_in(&dir, args),
        dir,
        _tmp: tmp,
    }
}

fn post(server: &TestServer, body: &Value) -> (u16, Value) {
    post_bytes(server, body.to_string().into_bytes())
}

fn post_bytes(server: &TestServer, body: Vec<u8>) -> (u16, Value) {
    let (status, v) = server.post_raw_status(ADD, body);
    for k in ["data", "errorCode", "errorMessage", "success"] {
        assert!(v.get(k).is_some(), "envelope key {k} missing: {v}");
    }
    (status, v)
}

fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let resp = server.client.get(server.url(path)).send().unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().unwrap())
}

/// Everything stored, to compare before and after a refused request.
fn snapshot(server: &TestServer) -> Value {
    let (status, v) = get(server, "/api/v1/hidden-dangers?page_size=1000");
    assert_eq!(status, 200, "{v}");
    v
}

fn refused(server: &TestServer, body: &Value, status: u16, code: &str) -> Value {
    let before = snapshot(server);
    let (s, v) = post(server, body);
    assert_eq!((s, v["errorCode"].as_str().unwrap()), (status, code), "{v}");
    assert_eq!(v["success"], false);
    assert_eq!(
        snapshot(server),
        before,
        "a refused request changed nothing"
    );
    v
}

#[test]
fn a_valid_batch_is_stored_and_read_back_byte_for_byte() {
    let n = node(&[]);
    let token = add_user(&n.dir, "alice");
    let mut second = item("r-2");
    second["rawEvent"] = json!({"nested": {"a": [1, 2.50, "中"]}, "z": null});
    second["issueLevel"] = json!("2");
    second["issueIP"] = json!("web.example.org");
    second.as_object_mut().unwrap().remove("issuePort");
    // The object's bytes exactly as sent (spacing and number spelling included).
    let raw_object = r#"{ "nested" : {"a": [1, 2.50, "中"]}, "z": null }"#;
    let body = signed("alice", &token, json!([item("r-1"), second]))
        .to_string()
        .replace(r#"{"nested":{"a":[1,2.5,"中"]},"z":null}"#, raw_object);
    assert!(body.contains(raw_object));
    let (s, v) = post_bytes(&n.server, body.into_bytes());
    assert_eq!(s, 200);
    assert_eq!(
        v,
        json!({"data": {"accepted": 2, "rejected": 0, "created": 2, "updated": 0, "unchanged": 0, "failures": []},
               "errorCode": "", "errorMessage": "", "success": true})
    );
    let (s, one) = get(&n.server, "/api/v1/hidden-dangers/alice/r-1");
    assert_eq!(s, 200, "{one}");
    assert_eq!(
        one["rawEvent"],
        "{\"vuln\": \"log4shell\",  \"score\": 10.0}"
    );
    assert_eq!(
        one["rawEventSha256"],
        sha256_hex("{\"vuln\": \"log4shell\",  \"score\": 10.0}".as_bytes())
    );
    assert_eq!(one["assetMac"], json!(["00:1a:2b:3c:4d:5e"]));
    assert_eq!(one["classify"], json!(["主机漏洞", "WEB漏洞"]));
    assert_eq!(one["revision"], 1);
    assert_eq!(one["revisions"].as_array().unwrap().len(), 1);
    let (_, two) = get(&n.server, "/api/v1/hidden-dangers/alice/r-2");
    assert_eq!(two["rawEvent"], raw_object);
    assert_eq!(two["rawEventSha256"], sha256_hex(raw_object.as_bytes()));
    assert_eq!(two["issueLevel"], 2);
    assert!(two.get("issuePort").is_none());
    let (s, missing) = get(&n.server, "/api/v1/hidden-dangers/alice/nope");
    assert_eq!(s, 404, "{missing}");
}

#[test]
fn every_item_rule_has_its_code_and_a_partial_batch_keeps_the_valid_items() {
    let n = node(&[]);
    let token = add_user(&n.dir, "alice");
    let with = |k: &str, v: Value| {
        let mut i = item("x");
        i[k] = v;
        i
    };
    let without = |k: &str| {
        let mut i = item("x");
        i.as_object_mut().unwrap().remove(k);
        i
    };
    let cases: Vec<(Value, &str, &str)> = vec![
        (without("riskId"), "MISSING_FIELD", "riskId"),
        (without("issueName"), "MISSING_FIELD", "issueName"),
        (without("issueLevel"), "MISSING_FIELD", "issueLevel"),
        (without("unitName"), "MISSING_FIELD", "unitName"),
        (without("dataFrom"), "MISSING_FIELD", "dataFrom"),
        (without("rawEvent"), "MISSING_FIELD", "rawEvent"),
        (with("classify", json!([])), "MISSING_FIELD", "classify"),
        (
            with("riskId", json!("r".repeat(51))),
            "FIELD_TOO_LONG",
            "riskId",
        ),
        (
            with("issueName", json!("漏".repeat(101))),
            "FIELD_TOO_LONG",
            "issueName has 101 characters",
        ),
        (
            with("unitName", json!("单".repeat(101))),
            "FIELD_TOO_LONG",
            "unitName",
        ),
        (
            with("issueSolution", json!("解".repeat(1001))),
            "FIELD_TOO_LONG",
            "issueSolution",
        ),
        (
            with("eventFrom", json!("来".repeat(21))),
            "FIELD_TOO_LONG",
            "eventFrom",
        ),
        (
            with("dataFrom", json!("源".repeat(51))),
            "FIELD_TOO_LONG",
            "dataFrom",
        ),
        (with("issueLevel", json!(5)), "INVALID_ENUM", "issueLevel"),
        (
            with("classify", json!(["主机漏洞", "网络漏洞"])),
            "INVALID_ENUM",
            "classify",
        ),
        (
            with("judgeState", json!("judgeStateMaybe")),
            "INVALID_ENUM",
            "judgeState",
        ),
        (
            with("noticeState", json!("")),
            "MISSING_FIELD",
            "noticeState",
        ),
        (
            with("noticeState", json!("done")),
            "INVALID_ENUM",
            "noticeState",
        ),
        (
            with("issueIP", json!("http://10.0.0.1/x")),
            "INVALID_ISSUE_IP",
            "issueIP",
        ),
        (
            with("issueIP", json!("10.0.0.1:8080")),
            "INVALID_ISSUE_IP",
            "issueIP",
        ),
        (
            with("issueIP", json!("300.1.1.1")),
            "INVALID_ISSUE_IP",
            "issueIP",
        ),
        (
            with("assetIpv4", json!(["10.0.0.256"])),
            "INVALID_PARAM",
            "assetIpv4",
        ),
        (
            with("assetIpv6", json!(["2001:db8::g"])),
            "INVALID_PARAM",
            "assetIpv6",
        ),
        (
            with("assetMac", json!(["00:1a:2b:3c:4d"])),
            "INVALID_PARAM",
            "assetMac",
        ),
        (
            with("issuePort", json!(65536)),
            "INVALID_PARAM",
            "issuePort",
        ),
        (
            with("startTime", json!("2024/06/01 08:00:00")),
            "INVALID_TIME",
            "startTime",
        ),
        (
            with("endTime", json!("2024-13-01 08:00:00")),
            "INVALID_TIME",
            "endTime",
        ),
        (
            with("endTime", json!("2024-06-01 07:59:59")),
            "INVALID_TIME",
            "before startTime",
        ),
        (json!("not an object"), "INVALID_PARAM", "not a JSON object"),
    ];
    // At the limits, Chinese text counted in characters, is fine.
    let mut at_limit = item("at-limit");
    at_limit["issueName"] = json!("漏".repeat(100));
    at_limit["unitName"] = json!("单".repeat(100));
    at_limit["issueSolution"] = json!("解".repeat(1000));
    at_limit["discoverFactory"] = json!("厂".repeat(20));
    let mut batch = vec![item("good-1"), at_limit];
    batch.extend(cases.iter().map(|(i, _, _)| i.clone()));
    batch.push(item("good-1")); // a duplicate in the batch
    let (s, v) = post(&n.server, &signed("alice", &token, json!(batch)));
    assert_eq!(s, 200);
    assert_eq!(v["success"], false);
    assert_eq!(v["errorCode"], "PARTIAL_FAILURE");
    assert_eq!(v["data"]["accepted"], 2, "{v}");
    let failures = v["data"]["failures"].as_array().unwrap();
    assert_eq!(failures.len(), cases.len() + 1, "{v}");
    for (k, (_, code, needle)) in cases.iter().enumerate() {
        let f = &failures[k];
        assert_eq!(f["index"], k + 2);
        assert_eq!(f["errorCode"], *code, "case {k}: {f}");
        assert!(
            f["errorMessage"].as_str().unwrap().contains(needle),
            "case {k}: {f}"
        );
    }
    let last = failures.last().unwrap();
    assert_eq!(last["errorCode"], "DUPLICATE_IN_BATCH");
    assert_eq!(last["riskId"], "good-1");
    // Exactly the two valid items are stored.
    let all = snapshot(&n.server);
    assert_eq!(all["total"], 2);
    let mut ids: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["riskId"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["at-limit", "good-1"]);

    // All rejected: nothing stored, and the code says so.
    let (_, v) = post(
        &n.server,
        &signed("alice", &token, json!([with("issueLevel", json!(9))])),
    );
    assert_eq!(
        (v["errorCode"].as_str(), v["data"]["accepted"].as_u64()),
        (Some("INVALID_PARAM"), Some(0))
    );
    assert_eq!(snapshot(&n.server)["total"], 2);
}

/// U+0000 in an envelope field or an item's text is refused naming the field, on every
/// backend (PostgreSQL cannot keep it), never an internal error.
#[test]
fn nul_characters_are_refused_naming_the_field() {
    let n = node(&[]);
    let token = add_user(&n.dir, "alice");
    let s = &n.server;
    let mut body = signed("alice", &token, json!([item("a")]));
    body["user"] = json!("ali\u{0}ce");
    let v = refused(s, &body, 200, "INVALID_PARAM");
    assert!(
        v["errorMessage"].as_str().unwrap().contains("user holds"),
        "{v}"
    );
    let mut bad = item("b");
    bad["unitName"] = json!("单位\u{0}");
    let (status, v) = post(s, &signed("alice", &token, json!([item("a"), bad])));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["created"], 1, "{v}");
    let failure = &v["data"]["failures"][0];
    assert_eq!(failure["errorCode"], "INVALID_PARAM", "{v}");
    assert!(
        failure["errorMessage"]
            .as_str()
            .unwrap()
            .contains("unitName holds"),
        "{v}"
    );
}

#[test]
fn signatures_timestamps_and_replays() {
    let n = node(&[]);
    let token = add_user(&n.dir, "alice");
    add_user(&n.dir, "bob");
    let s = &n.server;
    // Bad sign, unknown user: one code.
    let mut bad = signed("alice", &token, json!([item("a")]));
    bad["sign"] = json!("0".repeat(32));
    refused(s, &bad, 200, "AUTH_FAILED");
    refused(
        s,
        &signed("mallory", &token, json!([item("a")])),
        200,
        "AUTH_FAILED",
    );
    // Someone else's token.
    refused(
        s,
        &signed("bob", &token, json!([item("a")])),
        200,
        "AUTH_FAILED",
    );
    // Expired, in seconds and in milliseconds; malformed.
    for (ts, code) in [
        ((now_secs() - 301).to_string(), "AUTH_TIMESTAMP_EXPIRED"),
        ((now_secs() + 400).to_string(), "AUTH_TIMESTAMP_EXPIRED"),
        (
            ((now_secs() - 301) * 1000).to_string(),
            "AUTH_TIMESTAMP_EXPIRED",
        ),
        ((now_secs() * 100).to_string(), "INVALID_PARAM"),
    ] {
        let body = json!({"user": "alice", "timestamp": ts, "sign": md5_hex(&format!("{ts}alice{token}")), "dataValues": [item("a")]});
        refused(s, &body, 200, code);
    }
    // Milliseconds, as a numeric string, uppercase sign, dataValues as a string: accepted.
    let ts = (now_secs() * 1000 + 123).to_string();
    let body = json!({"user": "alice", "timestamp": ts, "sign": md5_hex(&format!("{ts}alice{token}")).to_uppercase(),
                      "dataValues": json!([item("ms")]).to_string()});
    let (status, first) = post(s, &body);
    assert_eq!((status, &first["success"]), (200, &json!(true)), "{first}");

    // The same request again: the first answer, nothing changed.
    let before = snapshot(s);
    let (_, again) = post(s, &body);
    assert_eq!(again, first);
    assert_eq!(snapshot(s), before);
    // Another body under the same user, timestamp and sign: refused.
    let mut other = body.clone();
    other["dataValues"] = json!([item("other")]);
    refused(s, &other, 200, "AUTH_REPLAY");

    // Malformed JSON and missing fields.
    let before = snapshot(s);
    let (_, v) = post_bytes(s, b"{\"user\": \"alice\", ".to_vec());
    assert_eq!(v["errorCode"], "INVALID_JSON", "{v}");
    let (_, v) = post_bytes(s, b"[1,2]".to_vec());
    assert_eq!(v["errorCode"], "INVALID_JSON", "{v}");
    assert_eq!(snapshot(s), before);
    let mut no_sign = signed("alice", &token, json!([item("a")]));
    no_sign.as_object_mut().unwrap().remove("sign");
    refused(s, &no_sign, 200, "INVALID_PARAM");
    refused(s, &signed("alice", &token, json!([])), 200, "INVALID_PARAM");
    refused(
        s,
        &signed("alice", &token, json!({"riskId": "x"})),
        200,
        "INVALID_PARAM",
    );
}

#[test]
fn upserts_keep_revisions_and_never_cross_users() {
    let n = node(&[]);
    let alice = add_user(&n.dir, "alice");
    let bob = add_user(&n.dir, "bob");
    let s = &n.server;
    post(s, &signed("alice", &alice, json!([item("shared-id")])));
    // Bob reports the same riskId: his own record; Alice's is untouched.
    let mut bobs = item("shared-id");
    bobs["unitName"] = json!("另一个单位");
    let (_, v) = post(s, &signed("bob", &bob, json!([bobs])));
    assert_eq!(v["data"]["created"], 1, "{v}");
    let (_, a) = get(s, "/api/v1/hidden-dangers/alice/shared-id");
    assert_eq!(a["unitName"], "安恒电子商务有限公司");
    assert_eq!(a["revision"], 1);

    // Alice updates hers: same record, revision 2, history kept.
    let mut updated = item("shared-id");
    updated["noticeState"] = json!("noticeStateFinished");
    updated["rawEvent"] = json!("second version");
    let (_, v) = post(s, &signed("alice", &alice, json!([updated.clone()])));
    assert_eq!(
        (v["data"]["updated"].as_u64(), v["data"]["created"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    let (_, a) = get(s, "/api/v1/hidden-dangers/alice/shared-id");
    assert_eq!(a["revision"], 2);
    assert_eq!(a["noticeState"], "noticeStateFinished");
    assert_eq!(a["rawEvent"], "second version");
    let revs = a["revisions"].as_array().unwrap();
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[0]["data"]["noticeState"], "noticeStateNone");
    assert_eq!(revs[1]["rawEventSha256"], sha256_hex(b"second version"));
    // A retry of the same content (new signature) changes nothing.
    let (_, v) = post(s, &signed("alice", &alice, json!([updated])));
    assert_eq!(v["data"]["unchanged"], 1, "{v}");
    let (_, a2) = get(s, "/api/v1/hidden-dangers/alice/shared-id");
    assert_eq!(a2["revision"], 2);
    let (_, b) = get(s, "/api/v1/hidden-dangers/bob/shared-id");
    assert_eq!(
        (b["unitName"].as_str(), b["revision"].as_u64()),
        (Some("另一个单位"), Some(1))
    );
    assert_eq!(snapshot(s)["total"], 2);
}

#[test]
fn limits_refuse_the_whole_request_and_store_nothing() {
    let n = node(&[
        "--hd-max-body-bytes",
        "200000",
        "--hd-max-items",
        "5",
        "--hd-max-item-bytes",
        "4000",
        "--hd-rate",
        "1",
        "--hd-burst",
        "6",
    ]);
    let token = add_user(&n.dir, "alice");
    let s = &n.server;
    post(s, &signed("alice", &token, json!([item("kept")])));
    let six: Vec<Value> = (0..6).map(|i| item(&format!("b{i}"))).collect();
    refused(
        s,
        &signed("alice", &token, json!(six)),
        413,
        "BATCH_TOO_LARGE",
    );
    let mut big = item("big");
    big["rawEvent"] = json!("x".repeat(5000));
    refused(
        s,
        &signed("alice", &token, json!([item("ok"), big])),
        413,
        "PAYLOAD_TOO_LARGE",
    );
    let mut huge = signed("alice", &token, json!([item("h")]));
    huge["padding"] = json!("p".repeat(300_000));
    refused(s, &huge, 413, "PAYLOAD_TOO_LARGE");
    // The burst (6) is spent by now (1 stored + 3 refused above + these): then 429.
    let mut limited = None;
    for i in 0..10 {
        let (status, v) = post(s, &signed("alice", &token, json!([item(&format!("r{i}"))])));
        if status == 429 {
            limited = Some(v);
            break;
        }
    }
    let v = limited.expect("the rate limit answered 429");
    assert_eq!(v["errorCode"], "RATE_LIMITED");
    let before = snapshot(s);
    let (status, _) = post(s, &signed("alice", &token, json!([item("late")])));
    assert_eq!(status, 429);
    assert_eq!(snapshot(s), before);
}

#[test]
fn reading_back_filters_pages_and_auth() {
    let n = node(&["--api-token", "secret"]);
    let alice = add_user(&n.dir, "alice");
    let bob = add_user(&n.dir, "bob");
    let s = &n.server;
    let mut batch = Vec::new();
    for i in 0..12 {
        let mut it = item(&format!("a{i:02}"));
        it["issueLevel"] = json!(i % 5);
        it["unitName"] = json!(if i % 2 == 0 { "单位甲" } else { "单位乙" });
        it["judgeState"] = json!(if i < 3 {
            "judgeStateFalse"
        } else {
            "judgeStateTrue"
        });
        it["issueIP"] = json!(format!("10.0.0.{i}"));
        it["assetIpv4"] = json!([format!("192.0.2.{i}")]);
        it["startTime"] = json!(format!("2024-06-{:02} 08:00:00", i + 1));
        it["endTime"] = json!(format!("2024-06-{:02} 09:00:00", i + 1));
        batch.push(it);
    }
    let (_, a) = post(s, &signed("alice", &alice, json!(batch)));
    assert_eq!(a["data"]["accepted"], 12, "{a}");
    let (_, b) = post(s, &signed("bob", &bob, json!([item("b1")])));
    assert_eq!(b["data"]["accepted"], 1, "{b}");
    let auth = |path: &str| {
        let resp = s
            .client
            .get(s.url(path))
            .bearer_auth("secret")
            .send()
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().unwrap())
    };
    assert_eq!(
        get(s, "/api/v1/hidden-dangers").0,
        401,
        "the node's API token protects reads"
    );
    let count = |q: &str| {
        let (st, v) = auth(&format!("/api/v1/hidden-dangers?{q}"));
        assert_eq!(st, 200, "{q}: {v}");
        v["total"].as_u64().unwrap()
    };
    assert_eq!(count(""), 13);
    assert_eq!(count("user=bob"), 1);
    assert_eq!(count("unit_name=%E5%8D%95%E4%BD%8D%E7%94%B2"), 6); // 单位甲
    assert_eq!(count("issue_level=4"), 3); // a04, a09 and bob's b1
    assert_eq!(count("judge_state=judgeStateFalse"), 3);
    assert_eq!(count("notice_state=noticeStateNone"), 13);
    assert_eq!(count("ip=10.0.0.3"), 1);
    assert_eq!(count("ip=192.0.2.7"), 1);
    assert_eq!(
        count("user=alice&since=2024-06-10%2000:00:00&until=2024-06-11%2023:00:00"),
        2
    );
    assert_eq!(count("user=alice&since=2024-06-12T00:00:00Z"), 1);
    let (_, page) = auth("/api/v1/hidden-dangers?user=alice&page=3&page_size=5");
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(
        (
            page["page"].as_u64(),
            page["page_size"].as_u64(),
            page["total"].as_u64()
        ),
        (Some(3), Some(5), Some(12))
    );
    for bad in [
        "issue_level=7",
        "judge_state=x",
        "since=yesterday",
        "ip=10.0.0",
        "page=0",
        "page_size=5000",
        "colour=red",
    ] {
        let (st, v) = auth(&format!("/api/v1/hidden-dangers?{bad}"));
        assert_eq!(st, 400, "{bad}: {v}");
        assert!(v["error"].is_string());
    }
}

#[test]
fn the_stix_export_passes_the_validator() {
    let n = node(&[]);
    let token = add_user(&n.dir, "alice");
    let mut plain = item("no-cve");
    plain["issueName"] = json!("弱口令");
    for k in [
        "issueSolution",
        "issueDescription",
        "assetMac",
        "assetIpv6",
        "assetDomain",
        "issuePort",
    ] {
        plain.as_object_mut().unwrap().remove(k);
    }
    plain["issueIP"] = json!("db.example.net");
    let mut v6 = item("v6");
    v6["issueIP"] = json!("2001:db8::1");
    post(
        &n.server,
        &signed("alice", &token, json!([item("cve"), plain, v6])),
    );
    let resp = n
        .server
        .client
        .get(n.server.url("/api/v1/hidden-dangers/stix?user=alice"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"],
        "application/stix+json;version=2.1"
    );
    let bundle: Value = resp.json().unwrap();
    // The id is written over a placeholder once every report was read: a real, stable one.
    let id = bundle["id"].as_str().unwrap();
    assert!(
        id.starts_with("bundle--") && !id.ends_with("-0000-000000000000"),
        "{id}"
    );
    let again: Value = n
        .server
        .client
        .get(n.server.url("/api/v1/hidden-dangers/stix?user=alice"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(again, bundle, "the same reports export the same bundle");
    let objects = bundle["objects"].as_array().unwrap();
    let of = |t: &str| objects.iter().filter(|o| o["type"] == t).count();
    assert_eq!(of("sighting"), 3);
    assert_eq!(of("observed-data"), 3);
    assert_eq!(of("vulnerability"), 2, "one per distinct issueName");
    assert_eq!(of("note"), 2, "one per issueSolution");
    assert_eq!(
        of("identity"),
        3,
        "the organisation, the reporting platform and the producer"
    );
    assert_eq!(of("extension-definition"), 1);
    let vuln = objects
        .iter()
        .find(|o| o["type"] == "vulnerability" && o.get("external_references").is_some())
        .unwrap();
    assert_eq!(
        vuln["external_references"][0]["external_id"],
        "CVE-2021-44228"
    );
    let sighting = objects.iter().find(|o| o["type"] == "sighting").unwrap();
    assert_eq!(
        sighting["first_seen"], "2024-06-01T00:00:00.000Z",
        "08:00 in UTC+08:00"
    );
    assert_eq!(sighting["count"], 1);
    // Seen by the reporting platform, at the organisation.
    let wheres = sighting["where_sighted_refs"].as_array().unwrap();
    assert_eq!(wheres.len(), 2);
    let platform = objects.iter().find(|o| o["id"] == wheres[0]).unwrap();
    assert_eq!(platform["identity_class"], "system");
    let unit = objects.iter().find(|o| o["id"] == wheres[1]).unwrap();
    assert_eq!(unit["identity_class"], "organization");
    let path = n.dir.join("hd-bundle.json");
    std::fs::write(&path, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let summary = validate_stix(&[path]);
    assert_eq!(summary["errors"], json!([]), "{summary}");
    assert!(
        summary["warnings"].as_object().unwrap().is_empty(),
        "{summary}"
    );
}

#[test]
fn concurrent_replays_of_one_signed_request_store_one_body() {
    let n = node(&["--hd-rate", "0"]);
    let token = add_user(&n.dir, "alice");
    let s = &n.server;
    for trial in 0..10 {
        // Different bodies under one (user, timestamp, sign), sent at once: one is stored, the
        // others are refused as replays; identical ones get the first answer.
        let base = signed("alice", &token, json!([]));
        let bodies: Vec<Value> = (0..6)
            .map(|k| {
                let mut b = base.clone();
                let risk = if k % 3 == 2 {
                    format!("t{trial}-0")
                } else {
                    format!("t{trial}-{k}")
                };
                b["dataValues"] = json!([item(&risk)]);
                b
            })
            .collect();
        let answers: Vec<Value> = std::thread::scope(|scope| {
            let handles: Vec<_> = bodies
                .iter()
                .map(|b| scope.spawn(move || post(s, b).1))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let stored: Vec<&Value> = answers.iter().filter(|a| a["success"] == true).collect();
        for a in &answers {
            assert!(
                a["success"] == true || a["errorCode"] == "AUTH_REPLAY",
                "{a}"
            );
        }
        let (_, listed) = get(s, "/api/v1/hidden-dangers?user=alice&page_size=100");
        let ids: Vec<&str> = listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["riskId"].as_str().unwrap())
            .filter(|r| r.starts_with(&format!("t{trial}-")))
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "trial {trial}: stored {ids:?}; answers {answers:?}"
        );
        // Every success is the one stored body's answer (an identical duplicate shares it).
        assert!(!stored.is_empty());
        for a in &stored {
            assert_eq!(*a, stored[0]);
        }
    }
}

/// Sends a whole request (headers and body) before reading anything, as Python `requests` and
/// `urllib` do, then reads the answer: the node must not close before its refusal is read.
fn send_all_then_read(addr: &str, head: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .write_all(body)
        .expect("the node reads the whole refused body");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn refusals_reach_clients_that_send_everything_first_and_bodies_share_a_memory_budget() {
    use std::io::Write;
    let n = node(&[
        "--hd-max-body-bytes",
        "100000",
        "--max-upload-bytes",
        "100000",
        "--max-body-memory-bytes",
        "1000000",
    ]);
    let token = add_user(&n.dir, "alice");
    let s = &n.server;
    let addr = s.base.trim_start_matches("http://").to_string();
    // A hidden-danger body over the limit, declared and sent whole.
    let body = vec![b' '; 3 << 20];
    let head = format!(
        "POST {ADD} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let answer = send_all_then_read(&addr, &head, &body);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    // An upload over the limit, sent whole.
    let boundary = "XyZ";
    let mut upload = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"task_id\"\r\n\r\nt1\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\nsrc\n"
    )
    .into_bytes();
    upload.extend(std::iter::repeat_n(b'1', 3 << 20));
    upload.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
    let head = format!(
        "POST /data/upload_file HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        upload.len()
    );
    let answer = send_all_then_read(&addr, &head, &upload);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("--max-upload-bytes"), "{answer}");

    // Bodies held at once: ten slow clients each hold 95,000 bytes of a body they have not
    // finished (950,000 of the 1,000,000 budget) ...
    let partial = vec![b' '; 95_000];
    let mut holders = Vec::new();
    for _ in 0..10 {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        let head = format!(
            "POST {ADD} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            partial.len() + 1000
        );
        c.write_all(head.as_bytes()).unwrap();
        c.write_all(&partial).unwrap();
        holders.push(c);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    // ... so the next body does not fit: 503 with Retry-After, and nothing is stored.
    let before = snapshot(s);
    let report = signed("alice", &token, json!([item("busy")]));
    let mut padded = report.clone();
    padded["padding"] = json!("p".repeat(90_000));
    let resp = s
        .client
        .post(s.url(ADD))
        .header("content-type", "application/json")
        .body(padded.to_string())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let v: Value = resp.json().unwrap();
    assert_eq!(v["errorCode"], "SERVER_BUSY", "{v}");
    assert!(
        v["errorMessage"]
            .as_str()
            .unwrap()
            .contains("--max-body-memory-bytes"),
        "{v}"
    );
    assert_eq!(snapshot(s), before);
    // When the slow clients go away their bytes are given back.
    drop(holders);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (status, v) = post(s, &padded);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["success"], true, "{v}");
}

/// Tests of the real binary as a process (the slow stage).
mod process {
    use super::*;

    #[test]
    fn users_cli_and_a_running_node_see_changes_at_once() {
        let n = node(&[]);
        let token = add_user(&n.dir, "alice");
        let (s, v) = post(&n.server, &signed("alice", &token, json!([item("r1")])));
        assert_eq!((s, &v["success"]), (200, &json!(true)), "{v}");

        let dup = users_cli(&n.dir, &["add", "alice"]);
        assert!(!dup.status.success());
        assert!(String::from_utf8_lossy(&dup.stderr).contains("exists already"));
        for bad in ["1abc", "elevenchars", "a b"] {
            let out = users_cli(&n.dir, &["add", bad]);
            assert!(!out.status.success(), "{bad}");
        }
        let list = String::from_utf8(users_cli(&n.dir, &["list"]).stdout).unwrap();
        assert!(list.starts_with("alice\t"), "{list}");
        assert!(!list.contains(&token), "tokens are never listed");

        // Rotation: the old token stops working at once, the new one works.
        let out = users_cli(&n.dir, &["rotate", "alice"]);
        assert!(out.status.success());
        let new = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_string();
        assert_ne!(new, token);
        refused(
            &n.server,
            &signed("alice", &token, json!([item("r2")])),
            200,
            "AUTH_FAILED",
        );
        let (_, v) = post(&n.server, &signed("alice", &new, json!([item("r2")])));
        assert_eq!(v["success"], true, "{v}");

        assert!(users_cli(&n.dir, &["remove", "alice"]).status.success());
        refused(
            &n.server,
            &signed("alice", &new, json!([item("r3")])),
            200,
            "AUTH_FAILED",
        );
        assert!(!users_cli(&n.dir, &["remove", "alice"]).status.success());
        // Its reports are kept.
        assert_eq!(snapshot(&n.server)["total"], 2);
        // Tokens are never logged.
        let log = std::fs::read_to_string(n.dir.with_extension("log")).unwrap();
        assert!(!log.contains(&token) && !log.contains(&new));
    }

    #[test]
    fn report_pushes_to_a_second_node_in_signed_batches() {
        let upper = node(&[]);
        let token = add_user(&upper.dir, "lower");
        let mut items: Vec<Value> = (0..7).map(|i| item(&format!("up-{i}"))).collect();
        items[4]["issueLevel"] = json!(9);
        let mut raw_object = item("up-raw");
        raw_object["rawEvent"] = json!({"kept": "as sent"});
        items.push(raw_object);
        let file = upper.dir.with_extension("items.json");
        // An object rawEvent spelled with spaces: it must arrive byte for byte.
        let text = serde_json::to_string_pretty(&items).unwrap().replace(
            "{\n      \"kept\": \"as sent\"\n    }",
            "{ \"kept\" :  \"as sent\" }",
        );
        assert!(text.contains("{ \"kept\" :  \"as sent\" }"));
        std::fs::write(&file, text).unwrap();
        let report = |to: &str, token: &str, extra: &[&str]| {
            Command::new(BIN)
                .args(["report", "--to", to, "--user", "lower", "--batch", "3"])
                .args(extra)
                .arg(&file)
                .env("BRCTI_REPORT_TOKEN", token)
                .output()
                .unwrap()
        };
        let out = report(&upper.server.base, &token, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "one item is invalid: the exit status says so"
        );
        assert!(
            stdout.contains("8 items in 3 requests")
                && stdout.contains("7 accepted (7 created, 0 updated, 0 unchanged), 1 rejected"),
            "{stdout}"
        );
        assert!(
            stderr.contains("item 4 (riskId \"up-4\"): INVALID_ENUM"),
            "{stderr}"
        );
        assert_eq!(snapshot(&upper.server)["total"], 7);
        let (_, raw) = get(&upper.server, "/api/v1/hidden-dangers/lower/up-raw");
        assert_eq!(raw["rawEvent"], "{ \"kept\" :  \"as sent\" }");

        // Reporting again is harmless: the upsert leaves everything as it was.
        let before = snapshot(&upper.server);
        let out = report(&upper.server.base, &token, &[]);
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains("7 accepted (0 created, 0 updated, 7 unchanged)")
        );
        assert_eq!(snapshot(&upper.server), before);

        // A wrong token is refused whole; an unreachable platform is retried, then given up.
        let out = report(&upper.server.base, &"0".repeat(64), &[]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("AUTH_FAILED"));
        let out = report("http://127.0.0.1:9", &token, &["--attempts", "2"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("attempt 1:") && stderr.contains("gave up after 2 attempts"),
            "{stderr}"
        );
        assert!(!stderr.contains(&token), "the token is never printed");
    }

    #[test]
    fn report_waits_out_a_rate_limit_and_retries() {
        let upper = node(&["--hd-rate", "2", "--hd-burst", "1"]);
        let token = add_user(&upper.dir, "lower");
        let items: Vec<Value> = (0..4).map(|i| item(&format!("rl-{i}"))).collect();
        let file = upper.dir.with_extension("items.json");
        std::fs::write(
            &file,
            serde_json::to_vec(&json!({"dataValues": items})).unwrap(),
        )
        .unwrap();
        let out = Command::new(BIN)
            .args([
                "report",
                "--to",
                &upper.server.base,
                "--user",
                "lower",
                "--batch",
                "1",
            ])
            .arg(&file)
            .env("BRCTI_REPORT_TOKEN", &token)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("HTTP 429"),
            "the limit was hit and waited out: {stderr}"
        );
        assert_eq!(snapshot(&upper.server)["total"], 4);
    }
}
