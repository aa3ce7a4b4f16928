//! The web console: its access rule, sessions and CSRF protection over HTTP (fast stage), and
//! the whole flow in a real headless browser (`process::`, slow stage:
//! `tests/browser/console_flow.py`, Debian's chromium and chromedriver, selenium).

use reqwest::blocking::Client;
use reqwest::redirect::Policy;

use crate::common::TestServer;

fn client() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

fn html(c: &Client, url: &str, cookie: Option<&str>) -> (u16, String, Option<String>) {
    let mut req = c.get(url).header("accept", "text/html");
    if let Some(cookie) = cookie {
        req = req.header("cookie", cookie);
    }
    let resp = req.send().unwrap();
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (status, resp.text().unwrap(), location)
}

/// The CSRF token a page's forms carry.
fn csrf_of(page: &str) -> String {
    let at = page.find("data-csrf=\"").expect("a page with a CSRF token") + 11;
    page[at..at + 64].to_string()
}

#[test]
fn browsers_get_the_console_and_the_front_ends_keep_their_json() {
    let server = TestServer::start(&[]);
    let c = client();
    // The old front ends' connection check: JSON (and HEAD answers 200).
    let json: serde_json::Value = c.get(server.url("/")).send().unwrap().json().unwrap();
    assert_eq!(json["data"]["name"], "br-cti", "{json}");
    assert_eq!(c.head(server.url("/")).send().unwrap().status(), 200);
    // A browser: the overview, in Chinese by default, with a CSP that names no other host.
    let resp = c
        .get(server.url("/"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let page = resp.text().unwrap();
    assert!(page.contains("<html lang=\"zh-CN\">"), "{page}");
    assert!(page.contains("<h1>概览</h1>"), "{page}");
    // English on request (a cookie of the browser).
    let (status, _, location) = html(
        &c,
        &server.url("/console/lang?to=en&back=/console/users"),
        None,
    );
    assert_eq!((status, location.as_deref()), (303, Some("/console/users")));
    let (_, page, _) = html(&c, &server.url("/console/users"), Some("brcti_lang=en"));
    assert!(page.contains("<h1>Users</h1>"), "{page}");
    // Never sent to another host.
    let (_, _, location) = html(
        &c,
        &server.url("/console/lang?to=en&back=//evil.example/"),
        None,
    );
    assert_eq!(location.as_deref(), Some("/"));
    // Every asset is served by the node.
    for asset in ["console.css", "console.js", "world.svg"] {
        let resp = c
            .get(server.url(&format!("/console/assets/{asset}")))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{asset}");
        assert!(!resp.bytes().unwrap().is_empty());
    }
}

#[test]
fn a_token_node_asks_for_a_sign_in_and_every_change_for_its_csrf_token() {
    let server = TestServer::start(&["--api-token", "console-secret"]);
    let c = client();
    // Without a session: sent to the sign-in page, which then leads back.
    let (status, _, location) = html(&c, &server.url("/console/users"), None);
    assert_eq!(status, 303);
    assert_eq!(
        location.as_deref(),
        Some("/console/sign-in?next=/console/users")
    );
    let (status, _, location) = html(&c, &server.url("/"), None);
    assert_eq!(
        (status, location.as_deref()),
        (303, Some("/console/sign-in?next=/"))
    );
    // A wrong token: no cookie, a message.
    let resp = c
        .post(server.url("/console/sign-in"))
        .form(&[("token", "wrong"), ("next", "/console/users")])
        .send()
        .unwrap();
    assert!(resp.headers().get("set-cookie").is_none());
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .contains("err=")
    );
    // A forged or expired session is refused.
    for forged in [
        "brcti_session=99999999999.00",
        "brcti_session=1.abc",
        "brcti_session=",
    ] {
        let (status, _, _) = html(&c, &server.url("/console/users"), Some(forged));
        assert_eq!(status, 303, "{forged}");
    }
    // The right token: a secure, HTTP-only, same-site cookie.
    let resp = c
        .post(server.url("/console/sign-in"))
        .form(&[("token", "console-secret"), ("next", "/console/users")])
        .send()
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/console/users");
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{attr} missing: {set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let (status, page, _) = html(&c, &server.url("/console/users"), Some(&cookie));
    assert_eq!(status, 200);
    let csrf = csrf_of(&page);

    // A change without the CSRF token, or from another origin, changes nothing.
    let add = |form: &[(&str, &str)], origin: Option<&str>| {
        let mut req = c
            .post(server.url("/console/users"))
            .header("cookie", &cookie)
            .form(form);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send().unwrap()
    };
    let resp = add(&[("name", "mallory")], None);
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .contains("err=")
    );
    let resp = add(
        &[("name", "mallory"), ("csrf", &csrf)],
        Some("http://evil.example"),
    );
    assert!(
        resp.headers()["location"]
            .to_str()
            .unwrap()
            .contains("err=")
    );
    let (_, page, _) = html(&c, &server.url("/console/users"), Some(&cookie));
    assert!(!page.contains("mallory"), "a refused change was made");
    // With it: the user exists and its token is shown once.
    let resp = add(&[("name", "alice"), ("csrf", &csrf)], Some(&server.base));
    assert_eq!(resp.status(), 200);
    let page = resp.text().unwrap();
    assert!(page.contains("id=\"token-value\""), "{page}");
    // The upload endpoint wants the token in a header; its refusal comes after the body is
    // read (8 MiB, more than the sockets buffer), so that a client sending everything first
    // reads it. The same without a session.
    let big = || {
        reqwest::blocking::multipart::Form::new().part(
            "file",
            reqwest::blocking::multipart::Part::bytes(vec![b'a'; 8 << 20]).file_name("big.csv"),
        )
    };
    let resp = c
        .post(server.url("/console/datasets/upload"))
        .header("cookie", &cookie)
        .multipart(big())
        .send()
        .expect("the refusal reaches a client that sends everything first");
    assert_eq!(resp.status(), 403);
    let resp = c
        .post(server.url("/console/datasets/upload"))
        .multipart(big())
        .send()
        .expect("the refusal reaches a client that sends everything first");
    assert_eq!(resp.status(), 401);
    // The data API still wants its bearer token (a session cookie is not one).
    let resp = c
        .post(server.url("/data/get_local_stix_records"))
        .header("cookie", &cookie)
        .json(&serde_json::json!({"file_hash": "0".repeat(64)}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[test]
fn console_errors_say_what_is_wrong() {
    let server = TestServer::start(&[]);
    let c = client();
    let (status, page, _) = html(
        &c,
        &server.url(&format!("/console/datasets/{}", "a".repeat(64))),
        None,
    );
    assert_eq!(status, 404);
    assert!(page.contains("no uploaded file has hash"), "{page}");
    let (status, page, _) = html(&c, &server.url("/console/datasets/not-a-hash"), None);
    assert_eq!(status, 404);
    assert!(page.contains("not a file hash"), "{page}");
    let (status, page, _) = html(
        &c,
        &server.url("/console/hidden-dangers?issue_level=9"),
        None,
    );
    assert_eq!(status, 200, "the filter form, with the reason");
    assert!(
        page.contains("class=\"error\"") && page.contains("issue_level"),
        "{page}"
    );
    // A conversion with a wrong field: the data API's words, on the dataset's page.
    let hash = server.upload_ok(b"src,dst\n1.2.3.4,5.6.7.8\n", "pairs.csv");
    let (_, page, _) = html(&c, &server.url("/console/users"), None);
    let csrf = csrf_of(&page);
    let resp = c
        .post(server.url(&format!("/console/datasets/{hash}/convert")))
        .form(&[("csrf", csrf.as_str()), ("stix_type", "9")])
        .send()
        .unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("err="), "{location}");
    let (status, page, _) = html(&c, &server.url(&location), None);
    assert_eq!(status, 200);
    assert!(
        page.contains("field `stix_type`: 9 is not a whole number from 1 to 5"),
        "{page}"
    );
}

#[test]
fn a_conversion_started_in_the_console_shows_live_progress_and_can_be_canceled() {
    let server = TestServer::start(&[]);
    let c = client();
    let hash = server.upload_ok(&crate::common::big_csv(60_000), "big.csv");
    let page_url = server.url(&format!("/console/datasets/{hash}"));
    let (_, page, _) = html(&c, &page_url, None);
    assert!(page.contains("id=\"format\">CSV"), "{page}");
    let csrf = csrf_of(&page);
    let resp = c
        .post(format!("{page_url}/convert"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("stix_type", "1"),
            ("stix_compress", "100"),
            ("stix_tags", "sdn"),
            ("stix_tags", "ddos"),
        ])
        .send()
        .unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.contains("ok=") && location.ends_with("#progress"),
        "{location}"
    );
    // The panel the page polls: live while the job runs.
    let (status, panel, _) = html(&c, &format!("{page_url}/progress"), None);
    assert_eq!(status, 200);
    assert!(panel.contains("data-live=\"1\""), "{panel}");
    assert!(panel.contains("cancel-button"), "{panel}");
    // A second start is refused with the use case's words.
    let resp = c
        .post(format!("{page_url}/convert"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    let again = resp.headers()["location"].to_str().unwrap().to_string();
    let (_, page, _) = html(&c, &server.url(&again), None);
    assert!(page.contains("is already"), "{page}");
    let resp = c
        .post(format!("{page_url}/cancel"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .unwrap();
    assert!(resp.headers()["location"].to_str().unwrap().contains("ok="));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, panel, _) = html(&c, &format!("{page_url}/progress"), None);
        if panel.contains("data-status=\"canceled\"") {
            assert!(panel.contains("data-live=\"0\""), "{panel}");
            // Canceled while running, or while still queued when the workers were slow to
            // claim it (the machine busy with other tests): both are the cancel's outcome.
            assert!(
                panel.contains("canceled on request")
                    || panel.contains("canceled before it started"),
                "{panel}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{panel}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Repeated fields of the form (the ticked tags) became the API's list.
    if let Some(first) = server.stix_records(&hash).first() {
        assert_eq!(
            first["stix_tags"],
            serde_json::json!(["sdn", "ddos"]),
            "{first}"
        );
    }
}

#[test]
fn a_stix_file_pages_its_objects_and_links_references_across_pages() {
    let server = TestServer::start(&[]);
    let c = client();
    let hash = server.upload_ok(&crate::common::big_csv(400), "refs.csv");
    server.start_stix(&serde_json::json!({"file_hash": hash, "stix_compress": 400}));
    server.wait_stix(&hash);
    let stix = server.stix_records(&hash)[0]["stix_file_hash"]
        .as_str()
        .unwrap()
        .to_string();
    let base = format!("/console/stix/{hash}/{stix}");
    let (status, page, _) = html(&c, &server.url(&base), None);
    assert_eq!(status, 200);
    assert_eq!(
        page.matches("<article class=\"object\"").count(),
        50,
        "50 a page"
    );
    assert!(page.contains("rel=\"next\""), "more pages follow");
    // A reference to an object of another page (page 2 names the producer and the markings
    // of page 1) leads there.
    let (_, page, _) = html(&c, &server.url(&format!("{base}?page=2")), None);
    let at = page.find("?find=").expect("a reference to another page");
    let href = &page[page[..at].rfind('"').unwrap() + 1..at + page[at..].find('"').unwrap()];
    let href = href.replace("&amp;", "&");
    let id = href.rsplit("find=").next().unwrap().to_string();
    let (status, _, location) = html(&c, &server.url(&href), None);
    assert_eq!(status, 303, "{href}");
    let location = location.unwrap();
    assert!(location.ends_with(&format!("#{id}")), "{location}");
    let (_, target, _) = html(&c, &server.url(location.split('#').next().unwrap()), None);
    assert!(target.contains(&format!("id=\"{id}\"")), "{location}");
    // An id that is not in the file.
    let (status, page, _) = html(&c, &server.url(&format!("{base}?find=x--nope")), None);
    assert_eq!(status, 404);
    assert!(page.contains("is not an object of this file"), "{page}");
}

/// The real binary and a real browser.
mod process {
    use std::path::Path;
    use std::process::Command;

    use crate::common::{self, BIN, TestServer};

    fn have(path: &str, what: &str) -> String {
        let p = std::env::var(what).unwrap_or_else(|_| path.to_string());
        assert!(
            Path::new(&p).exists(),
            "the browser test needs {p} (Debian's chromium and chromium-driver: scripts/test.sh \
             installs them with apt-get)"
        );
        p
    }

    #[test]
    fn the_console_walks_the_whole_flow_in_a_browser() {
        have("/usr/bin/chromium", "BRCTI_TEST_CHROMIUM");
        have("/usr/bin/chromedriver", "BRCTI_TEST_CHROMEDRIVER");
        let work = tempfile::tempdir().unwrap();
        let geo = work.path().join("city.mmdb");
        common::write_test_geoip(&geo);
        let server = TestServer::start_process(&[
            "--api-token",
            "browser-test-token",
            "--geoip-db",
            geo.to_str().unwrap(),
        ]);
        let sdn = work.path().join("sdn_2500.csv");
        common::datasets::write_sdn_csv(&sdn, 2_500, 7).unwrap();
        let findings = work.path().join("findings.json");
        std::fs::write(
            &findings,
            serde_json::json!([
                {"riskId": "HD-2024-0001", "issueName": "Apache Log4j2 远程代码执行 CVE-2021-44228",
                 "issueLevel": 4, "issueIP": "10.20.30.40", "issuePort": 8080,
                 "classify": ["主机漏洞"], "unitName": "安恒电子商务有限公司",
                 "assetIpv4": ["10.20.30.40"], "startTime": "2024-06-01 08:00:00",
                 "endTime": "2024-06-02 18:30:00", "dataFrom": "省级平台",
                 "judgeState": "judgeStateTrue", "noticeState": "noticeStateNone",
                 "rawEvent": {"plugin": "log4shell"}},
                {"riskId": "HD-2024-0002", "issueName": "OpenSSH regreSSHion CVE-2024-6387",
                 "issueLevel": 4, "issueIP": "10.20.30.41", "issuePort": 22,
                 "classify": ["主机漏洞"], "unitName": "安恒电子商务有限公司",
                 "assetIpv4": ["10.20.30.41"], "startTime": "2024-07-01 08:00:00",
                 "endTime": "2024-07-02 18:30:00", "dataFrom": "省级平台",
                 "judgeState": "judgeStateNone", "noticeState": "noticeStateNone",
                 "rawEvent": {"plugin": "regresshion"}}
            ])
            .to_string(),
        )
        .unwrap();
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        let _ = std::fs::remove_dir_all(&shots);
        std::fs::create_dir_all(&shots).unwrap();
        let config = work.path().join("config.json");
        std::fs::write(
            &config,
            serde_json::json!({
                "url": server.base,
                "token": "browser-test-token",
                "honeypot": common::sample("honeypot-sample.jsonl"),
                "sdn": sdn,
                "cli": BIN,
                "data_dir": server.data_dir,
                "shots": shots,
                "findings": findings,
            })
            .to_string(),
        )
        .unwrap();
        let out = Command::new(common::oracle_python())
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/console_flow.py"))
            .arg(&config)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "the browser test printed no JSON ({e}): {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(
            report["ok"],
            true,
            "{}\n{}\nscreenshots in {}",
            report["error"],
            report["trace"].as_str().unwrap_or(""),
            shots.display()
        );
        assert!(report["steps"].as_array().unwrap().len() >= 15, "{report}");
        eprintln!("console screenshots: {}", shots.display());
    }
}
