//! Test harness: a node serving on a random loopback port, driven over HTTP. API tests run it
//! in this process ([`TestServer::start`]: fast, and jobs are awaited with the scheduler's
//! idle hook); process tests (kill -9, SIGTERM, restarts, memory, injected faults) run the real
//! `br-cti` binary ([`TestServer::start_process`] and the `start_in` family).
#![allow(dead_code)]

pub(crate) mod datasets;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::blocking::{Client, Response, multipart};
use serde_json::Value;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_br-cti");

/// How the node under test runs.
enum Node {
    Process(Child),
    InProcess(br_cti::node::InProcess),
}

pub(crate) struct TestServer {
    node: Node,
    pub base: String,
    pub data_dir: PathBuf,
    pub client: Client,
    /// The node's bucket (`s3://…`) when its files are in one.
    pub bucket: Option<String>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A node in this process on a fresh data directory, with `serve`'s flags `args`. With
    /// `BRCTI_TEST_BACKEND=postgres` its records are in a fresh schema of the test PostgreSQL
    /// server (the test command runs the API tests on both backends).
    pub(crate) fn start(args: &[&str]) -> Self {
        Self::start_on(on_postgres(), args)
    }

    /// A node in this process on SQLite whatever the backend of the run (for tests of the
    /// database file itself).
    pub(crate) fn start_sqlite(args: &[&str]) -> Self {
        Self::start_on(false, args)
    }

    fn start_on(postgres: bool, args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let dir_arg = dir.to_str().unwrap();
        let database = postgres
            .then(|| br_cti_store_pg::testing::schema_url(&br_cti_store_pg::testing::new_schema()));
        let bucket = (postgres && on_s3()).then(br_cti_store_s3::testing::new_url);
        let bucket_flags = bucket.as_ref().map(|url| {
            let mut flags = vec!["--blob-store".to_string(), url.clone()];
            for option in br_cti_store_s3::testing::options() {
                flags.extend(["--blob-store-option".to_string(), option]);
            }
            flags
        });
        let mut backend: Vec<&str> = match &database {
            Some(url) => vec!["--database-url", url],
            None => Vec::new(),
        };
        if let Some(flags) = &bucket_flags {
            backend.extend(flags.iter().map(String::as_str));
        }
        let argv = ["serve", "--listen", "127.0.0.1:0", "--data-dir", dir_arg]
            .into_iter()
            .chain(backend)
            .chain(args.iter().copied());
        let config = br_cti::serve_args::ServeArgs::parse_from(argv)
            .unwrap_or_else(|e| panic!("serve {args:?}: {e}"))
            .into_config();
        let node = br_cti::node::InProcess::start(config).expect("starting the node in-process");
        TestServer {
            base: format!("http://{}", node.addr()),
            node: Node::InProcess(node),
            data_dir: dir,
            client: client(),
            bucket,
            _tmp: Some(tmp),
        }
    }

    /// The real binary on a fresh data directory.
    pub(crate) fn start_process(args: &[&str]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let mut s = Self::start_in(&dir, args);
        s._tmp = Some(tmp);
        s
    }

    /// A server on the given data directory (kept by the caller, e.g. across a restart).
    pub(crate) fn start_in(data_dir: &Path, args: &[&str]) -> Self {
        Self::try_start_in_env(data_dir, args, &[]).unwrap_or_else(|| {
            panic!(
                "server did not start; see {}",
                data_dir.with_extension("log").display()
            )
        })
    }

    /// A server with extra environment variables; `None` when the process ends (or says
    /// nothing for 30 s) before it listens.
    pub(crate) fn try_start_in_env(
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Option<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .unwrap();
        // A benchmark can compare builds: BR_CTI_BIN names another binary for the server.
        let bin = std::env::var("BR_CTI_BIN").unwrap_or_else(|_| BIN.to_string());
        let mut child = Command::new(bin)
            .arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(if args.contains(&"--database-url") {
                Vec::new()
            } else {
                backend_flags_for(data_dir)
            })
            .args(args)
            .env_remove("BRCTI_API_TOKEN")
            .env_remove("BRCTI_LISTEN")
            .env_remove("BRCTI_DATA_DIR")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn br-cti");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        };
        let base = line
            .strip_prefix("br-cti listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Some(TestServer {
            node: Node::Process(child),
            base,
            data_dir: data_dir.to_path_buf(),
            client: client(),
            bucket: None,
            _tmp: None,
        })
    }

    fn child(&mut self) -> &mut Child {
        match &mut self.node {
            Node::Process(child) => child,
            Node::InProcess(_) => {
                panic!("this test needs the node as a process: start it with start_process")
            }
        }
    }

    /// The scheduler of a node in this process.
    fn in_process(&self) -> Option<&br_cti::node::InProcess> {
        match &self.node {
            Node::InProcess(node) => Some(node),
            Node::Process(_) => None,
        }
    }

    /// Whether the server process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child().try_wait(), Ok(None))
    }

    /// Waits until the node's job worker has nothing left to run (in-process nodes only; a
    /// process is polled through its progress endpoints instead).
    pub(crate) fn wait_jobs_idle(&self) {
        if let Some(node) = self.in_process() {
            assert!(
                node.jobs().wait_idle(Duration::from_secs(300)),
                "the jobs did not finish within 300 s"
            );
        }
    }

    /// Blobs stored (uploads and STIX files), wherever the node keeps them.
    pub(crate) fn blob_count(&self) -> usize {
        if let Some(url) = &self.bucket {
            return br_cti_store_s3::testing::object_counts(url).0;
        }
        let mut n = 0;
        let Ok(dirs) = std::fs::read_dir(self.data_dir.join("blobs")) else {
            return 0;
        };
        for dir in dirs {
            n += std::fs::read_dir(dir.unwrap().path()).unwrap().count();
        }
        n
    }

    /// Uploads being written (not yet stored under their hash).
    pub(crate) fn staged_count(&self) -> usize {
        if let Some(url) = &self.bucket {
            return br_cti_store_s3::testing::object_counts(url).1;
        }
        std::fs::read_dir(self.data_dir.join("tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// The bytes of a stored blob.
    pub(crate) fn blob(&self, hash: &str) -> Vec<u8> {
        match &self.bucket {
            Some(url) => read_location(&format!("{url}/sha256/{hash}")),
            None => std::fs::read(self.data_dir.join("blobs").join(&hash[..2]).join(hash))
                .unwrap_or_else(|e| panic!("blob {hash}: {e}")),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub(crate) fn post_json(&self, path: &str, body: &Value) -> Value {
        self.post_raw(path, body.to_string().into_bytes())
    }

    /// Posts raw bytes; asserts that the answer is JSON and returns it.
    pub(crate) fn post_raw(&self, path: &str, body: Vec<u8>) -> Value {
        self.post_raw_status(path, body).1
    }

    /// Posts raw bytes; asserts that the answer is JSON and returns the HTTP status and it.
    pub(crate) fn post_raw_status(&self, path: &str, body: Vec<u8>) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        (resp.status().as_u16(), json_of(resp))
    }

    pub(crate) fn get_json(&self, path: &str) -> Value {
        json_of(self.client.get(self.url(path)).send().unwrap())
    }

    pub(crate) fn upload(&self, bytes: &[u8], file_name: &str, task_id: &str) -> Value {
        let form = multipart::Form::new()
            .text("task_id", task_id.to_string())
            .part(
                "file",
                multipart::Part::bytes(bytes.to_vec()).file_name(file_name.to_string()),
            );
        json_of(
            self.client
                .post(self.url("/data/upload_file"))
                .multipart(form)
                .send()
                .unwrap(),
        )
    }

    /// Uploads and returns the file hash, asserting success.
    pub(crate) fn upload_ok(&self, bytes: &[u8], file_name: &str) -> String {
        let v = self.upload(bytes, file_name, &format!("t-{}", sha256_hex(bytes)));
        assert_eq!(v["code"], 200, "upload failed: {v}");
        v["data"]["file_hash"].as_str().unwrap().to_string()
    }

    pub(crate) fn features(&self, hash: &str) -> Value {
        self.post_json(
            "/data/get_traffic_data_features",
            &serde_json::json!({"file_hash": hash}),
        )
    }

    pub(crate) fn pid(&self) -> u32 {
        match &self.node {
            Node::Process(child) => child.id(),
            Node::InProcess(_) => {
                panic!("this test needs the node as a process: start it with start_process")
            }
        }
    }

    /// The server's peak resident memory so far (VmHWM), in MiB.
    pub(crate) fn peak_rss_mib(&self) -> f64 {
        self.memory_mib("VmHWM:")
    }

    /// The server's resident memory now (VmRSS), in MiB.
    pub(crate) fn rss_mib(&self) -> f64 {
        self.memory_mib("VmRSS:")
    }

    /// A memory figure of /proc/PID/status (given in KiB), in MiB; 0 once the process is gone.
    fn memory_mib(&self, field: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }

    /// CPU time the server has used so far: (user, system) seconds, from /proc/PID/stat.
    pub(crate) fn cpu_seconds(&self) -> (f64, f64) {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<f64> = rest
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0.0))
            .collect();
        let hz = rustix::param::clock_ticks_per_second() as f64;
        let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0.0) / hz;
        (field(14), field(15))
    }

    /// SIGTERM, as a service manager stops the node; waits for the process to end (at most
    /// 30 s) and answers whether it exited successfully.
    pub(crate) fn terminate(&mut self) -> bool {
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child().try_wait() {
                return status.success();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the node did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub(crate) fn kill(&mut self) {
        let child = self.child();
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let Node::Process(child) = &mut self.node else {
            return;
        };
        let exited = child.try_wait().ok().flatten();
        self.kill();
        // A failing test shows how the node ended and the end of its log (the data directory
        // and its log are deleted with the test).
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.data_dir.with_extension("log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- node {} (exited before the end: {exited:?}); the last lines of its log:",
                self.base
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// The backends of the API tests' nodes: `BRCTI_TEST_BACKEND` is `sqlite` (the default: SQLite
/// and the data directory), `postgres` (records in PostgreSQL), or `postgres+s3` (records in
/// PostgreSQL, files in a Garage bucket: what several nodes share).
fn backend() -> (bool, bool) {
    match std::env::var("BRCTI_TEST_BACKEND").as_deref() {
        Ok("postgres") => (true, false),
        Ok("postgres+s3") => (true, true),
        Ok("sqlite") | Err(_) => (false, false),
        Ok(other) => {
            panic!("BRCTI_TEST_BACKEND={other:?}: use sqlite, postgres or postgres+s3")
        }
    }
}

/// With `BRCTI_TEST_BACKEND=postgres[+s3]`, the flags that put a node started as a process on
/// `data_dir` on the test PostgreSQL (and bucket): a schema (and prefix) named after the
/// directory, so that a restart on the same directory finds its records again. Empty when the
/// run is on SQLite, or when `args` name their own stores.
fn backend_flags_for(data_dir: &Path) -> Vec<String> {
    let Some((name, url)) = database_for(data_dir) else {
        return Vec::new();
    };
    let mut flags = vec!["--database-url".to_string(), url];
    let s3 = backend().1;
    if s3 {
        flags.extend([
            "--blob-store".to_string(),
            format!("s3://{}/{name}", br_cti_store_s3::testing::BUCKET),
        ]);
        for option in br_cti_store_s3::testing::options() {
            flags.extend(["--blob-store-option".to_string(), option]);
        }
    }
    flags
}

/// The test schema (and its URL) of the node on `data_dir`, when the run is on PostgreSQL.
fn database_for(data_dir: &Path) -> Option<(String, String)> {
    if !backend().0 {
        return None;
    }
    let name = format!(
        "d{}",
        &sha256_hex(data_dir.to_string_lossy().as_bytes())[..16]
    );
    br_cti_store_pg::testing::ensure_schema(&name);
    let url = br_cti_store_pg::testing::schema_url(&name);
    Some((name, url))
}

/// True when the API tests' records are in PostgreSQL.
pub(crate) fn on_postgres() -> bool {
    backend().0
}

/// True when the API tests' files are in an S3 bucket.
pub(crate) fn on_s3() -> bool {
    backend().1
}

/// Where a node (a process: benchmarks, the multi-node tests) keeps its records and files.
pub(crate) enum Stores {
    /// SQLite and the data directory (the default).
    Local,
    /// A fresh schema of the test PostgreSQL and a fresh prefix of the test Garage bucket.
    Distributed {
        database_url: String,
        bucket: String,
    },
}

impl Stores {
    /// `local` or `distributed` (PostgreSQL + Garage, started on first use).
    pub(crate) fn named(name: &str) -> Self {
        match name {
            "local" => Stores::Local,
            "distributed" => Stores::Distributed {
                database_url: br_cti_store_pg::testing::schema_url(
                    &br_cti_store_pg::testing::new_schema(),
                ),
                bucket: br_cti_store_s3::testing::new_url(),
            },
            other => panic!("stores {other:?}: use local or distributed"),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Stores::Local => "sqlite+fs",
            Stores::Distributed { .. } => "postgres+s3",
        }
    }

    /// The flags of `serve` that select these stores.
    pub(crate) fn serve_flags(&self) -> Vec<String> {
        match self {
            Stores::Local => Vec::new(),
            Stores::Distributed {
                database_url,
                bucket,
            } => {
                let mut flags = vec![
                    "--database-url".to_string(),
                    database_url.clone(),
                    "--blob-store".to_string(),
                    bucket.clone(),
                ];
                for option in br_cti_store_s3::testing::options() {
                    flags.extend(["--blob-store-option".to_string(), option]);
                }
                flags
            }
        }
    }

    /// `br-cti users …` on these stores (the data directory's, or the database's users).
    pub(crate) fn users_ok(&self, dir: &Path, args: &[&str]) -> String {
        match self {
            Stores::Local => users_ok(dir, args),
            Stores::Distributed { database_url, .. } => {
                let mut all: Vec<&str> = args.to_vec();
                all.extend(["--database-url", database_url]);
                users_ok(dir, &all)
            }
        }
    }

    /// A node as a process on `dir` with these stores and the flags `args`.
    pub(crate) fn start_in(&self, dir: &Path, args: &[&str]) -> TestServer {
        let flags = self.serve_flags();
        let all: Vec<&str> = flags
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
            .collect();
        TestServer::start_in(dir, &all)
    }
}

/// The stores a benchmark compares, from `BENCH_STORES` (default `local,distributed`).
pub(crate) fn bench_stores() -> Vec<String> {
    std::env::var("BENCH_STORES")
        .unwrap_or_else(|_| "local,distributed".into())
        .split(',')
        .map(str::to_string)
        .collect()
}

/// An SDN-like CSV of `rows` flows (the conversion tests' long dataset: with `stix_compress`
/// 100, one file per 100 rows).
pub(crate) fn big_csv(rows: usize) -> Vec<u8> {
    let mut csv = String::from("dt,src,dst,pktcount,bytecount,Protocol,tot_dur,label\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "{},10.0.{}.{},10.0.0.{},{},{},{},{}.0,{}\n",
            3000 + i,
            i % 3,
            i % 200 + 1,
            i % 20 + 1,
            i * 3,
            i * 1066,
            ["UDP", "TCP", "ICMP"][i % 3],
            45_006_000_000u64 + i as u64,
            i % 2
        ));
    }
    csv.into_bytes()
}

/// The STIX file hashes of a conversion's records.
pub(crate) fn hashes(records: &[Value]) -> std::collections::BTreeSet<String> {
    records
        .iter()
        .map(|r| r["stix_file_hash"].as_str().unwrap().to_string())
        .collect()
}

/// The bytes at a location a record names (`stix_file_path`, `stix_data`): a path, or an
/// object in the test bucket.
pub(crate) fn read_location(location: &str) -> Vec<u8> {
    if location.starts_with("s3://") {
        return br_cti_store_s3::testing::read_location(location);
    }
    std::fs::read(location).unwrap_or_else(|e| panic!("{location}: {e}"))
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

pub(crate) fn json_of(resp: Response) -> Value {
    let status = resp.status();
    let text = resp.text().unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("HTTP {status}: not JSON ({e}): {text}"))
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Asserts a handled failure (`code` 400, `data` null) whose message contains `needle`.
#[track_caller]
pub(crate) fn assert_error(v: &Value, needle: &str) {
    assert_eq!(v["code"], 400, "expected a handled error, got {v}");
    assert!(v["data"].is_null(), "error data must be null: {v}");
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error text: {v}"));
    assert!(
        msg.contains(needle),
        "error {msg:?} does not mention {needle:?}"
    );
}

/// Asserts the progress answer of a failed or canceled job, by the two front ends' poller rule
/// (they act only on `code == 200`, and take `data: null` as "failed, stop polling"), and that
/// an API user still learns the status and the reason.
#[track_caller]
pub(crate) fn assert_job_ended(v: &Value, status: &str, needle: &str) {
    assert_eq!(v["code"], 200, "the pollers only act on code 200: {v}");
    assert!(
        v["data"].is_null(),
        "data: null tells the pollers to stop: {v}"
    );
    assert_eq!(v["status"], status, "{v}");
    let msg = v["msg"].as_str().unwrap_or_else(|| panic!("no msg: {v}"));
    assert!(
        msg.contains(needle),
        "msg {msg:?} does not mention {needle:?}"
    );
    assert_eq!(v["error"], v["msg"], "{v}");
    assert_eq!(v["job"]["status"], status, "the job's last progress: {v}");
}

pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The honeypot sample kept in the repository (`samples/`), also used by the README.
pub(crate) fn sample(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

impl TestServer {
    pub(crate) fn start_stix(&self, body: &Value) -> Value {
        self.post_json("/data/process_data_to_stix", body)
    }

    pub(crate) fn stix_progress(&self, hash: &str) -> Value {
        self.post_json(
            "/data/get_stix_process_progress",
            &serde_json::json!({"file_hash": hash}),
        )
    }

    /// Polls the conversion progress until it reaches 100 (panics on failure or timeout).
    pub(crate) fn wait_stix(&self, hash: &str) -> Value {
        self.wait_jobs_idle();
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            let v = self.stix_progress(hash);
            assert_eq!(v["code"], 200, "conversion failed: {v}");
            assert!(
                !(v["data"].is_null() && v["status"].is_string()),
                "conversion ended without finishing: {v}"
            );
            if v["data"]["progress"] == 100 {
                return v["data"].clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "conversion did not finish: {v}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn stix_records(&self, hash: &str) -> Vec<Value> {
        let v = self.post_json(
            "/data/get_local_stix_records",
            &serde_json::json!({"file_hash": hash}),
        );
        assert_eq!(v["code"], 200, "{v}");
        v["data"].as_array().unwrap().clone()
    }

    pub(crate) fn stix_file(&self, source: &str, stix: &str) -> Vec<u8> {
        let resp = self
            .client
            .get(self.url(&format!("/data/get_stix_file_content/{source}/{stix}")))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().unwrap().to_vec()
    }
}

/// The Python of the oracle virtual environment (`scripts/test.sh` creates it).
pub(crate) fn oracle_python() -> PathBuf {
    if let Ok(p) = std::env::var("BRCTI_TEST_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "the oracle tests need the Python virtual environment: run `bash scripts/test.sh` once (it creates .venv)"
    );
    venv
}

/// Generates datasets with the harness's deterministic generator ([`datasets`]); returns the
/// output folder.
pub(crate) fn generate(rows: u64, formats: &[&str]) -> PathBuf {
    datasets::generate_into(
        &Path::new(env!("CARGO_TARGET_TMPDIR")).join("datasets"),
        rows,
        formats,
    )
}

/// Runs the Python oracle `tests/oracles/<script>` with these arguments; returns the JSON it
/// prints (its exit status is the caller's to judge from the report).
pub(crate) fn run_oracle<A: AsRef<std::ffi::OsStr>>(script: &str, args: &[A]) -> Value {
    let out = Command::new(oracle_python())
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/oracles")
                .join(script),
        )
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "{script} output is not JSON ({e}): {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Runs the stix2-validator oracle over files; returns its JSON summary.
pub(crate) fn validate_stix(files: &[PathBuf]) -> Value {
    assert!(!files.is_empty(), "nothing to validate");
    run_oracle("validate.py", files)
}

impl TestServer {
    pub(crate) fn start_cti(&self, body: &Value) -> Value {
        self.post_json("/data/process_stix_to_cti", body)
    }

    pub(crate) fn cti_progress(&self, hash: &str) -> Value {
        self.post_json(
            "/data/get_cti_process_progress",
            &serde_json::json!({"file_hash": hash}),
        )
    }

    /// Polls the CTI progress until it reaches 100 (panics on failure or timeout).
    pub(crate) fn wait_cti(&self, hash: &str) -> Value {
        self.wait_jobs_idle();
        let deadline = std::time::Instant::now() + Duration::from_secs(300);
        loop {
            let v = self.cti_progress(hash);
            assert_eq!(v["code"], 200, "CTI build failed: {v}");
            if v["data"]["progress"] == 100 {
                return v["data"].clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "CTI build did not finish: {v}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn cti_records(&self, hash: &str) -> Vec<Value> {
        let v = self.post_json(
            "/data/get_local_cti_records",
            &serde_json::json!({"file_hash": hash}),
        );
        assert_eq!(v["code"], 200, "{v}");
        v["data"].as_array().unwrap().clone()
    }
}

/// Writes a small GeoIP2-City-layout `.mmdb` (the same format as GeoLite2-City and DB-IP Lite)
/// that knows 101.33.0.0/16 (Guangzhou) and 2606:4700::/32 (San Francisco), nothing else.
pub(crate) fn write_test_geoip(path: &Path) {
    let mut writer = mmdb_writer::Writer::new("BrCti-Test-City");
    let place = |country: &str, iso: &str, region: &str, city: &str, lat: f64, lon: f64| {
        serde_json::json!({
            "country": {"iso_code": iso, "names": {"en": country}},
            "subdivisions": [{"names": {"en": region}}],
            "city": {"names": {"en": city}},
            "location": {"latitude": lat, "longitude": lon},
        })
    };
    writer
        .insert(
            "101.33.0.0/16".parse::<ipnet::IpNet>().unwrap(),
            &place("China", "CN", "Guangdong", "Guangzhou", 23.1167, 113.25),
        )
        .unwrap();
    writer
        .insert(
            "2606:4700::/32".parse::<ipnet::IpNet>().unwrap(),
            &place(
                "United States",
                "US",
                "California",
                "San Francisco",
                37.7749,
                -122.4194,
            ),
        )
        .unwrap();
    std::fs::write(path, writer.to_bytes().unwrap()).unwrap();
}

/// Runs `br-cti users ARGS --data-dir DIR`.
pub(crate) fn users_cli(dir: &Path, args: &[&str]) -> std::process::Output {
    // The same build as the node (a benchmark's BR_CTI_BIN): a newer one would migrate the
    // database past what an older node opens.
    let bin = std::env::var("BR_CTI_BIN").unwrap_or_else(|_| BIN.to_string());
    let mut command = Command::new(bin);
    command.arg("users").args(args).arg("--data-dir").arg(dir);
    // The same database as a node started on `dir` (BRCTI_TEST_BACKEND=postgres…).
    if !args.contains(&"--database-url")
        && let Some((_, url)) = database_for(dir)
    {
        command.arg("--database-url").arg(url);
    }
    command.output().unwrap()
}

/// Runs a `br-cti users` command that must succeed; returns its last line (a token, for
/// `add` and `rotate`).
pub(crate) fn users_ok(dir: &Path, args: &[&str]) -> String {
    let out = users_cli(dir, args);
    assert!(
        out.status.success(),
        "users {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string()
}

/// A minimal XLSX workbook with one worksheet (its XML given as it is) and, optionally,
/// shared strings: the parts a reader looks at, deflated. Hostile files are made with it,
/// small, by the tests themselves.
pub(crate) fn xlsx_with(sheet_xml: &[u8], shared_strings_xml: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    let mut part = |name: &str, bytes: &[u8]| {
        zip.start_file(name, options).unwrap();
        zip.write_all(bytes).unwrap();
    };
    part(
        "[Content_Types].xml",
        br#"<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/><Override PartName="/xl/sharedStrings.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>"#,
    );
    part(
        "_rels/.rels",
        br#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="xl/workbook.xml"/></Relationships>"#,
    );
    part(
        "xl/workbook.xml",
        br#"<?xml version="1.0" encoding="UTF-8"?><workbook xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main" xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>"#,
    );
    part(
        "xl/_rels/workbook.xml.rels",
        br#"<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" Target="worksheets/sheet1.xml"/><Relationship Id="rId2" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>"#,
    );
    part("xl/worksheets/sheet1.xml", sheet_xml);
    if let Some(ss) = shared_strings_xml {
        part("xl/sharedStrings.xml", ss);
    }
    zip.finish().unwrap().into_inner()
}

/// A worksheet's XML around the given `<row>` elements.
pub(crate) fn sheet_xml(rows: &str) -> Vec<u8> {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>{rows}</sheetData></worksheet>"#
    )
    .into_bytes()
}
