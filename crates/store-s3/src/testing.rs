//! A Garage server (S3-compatible) for tests, and fresh empty stores on it.
//!
//! One private single-node server per test process, on free loopback ports, in a temporary
//! directory; `garage` is taken from `BRCTI_GARAGE_BIN`, else `PATH`, else unpacked from
//! `../shared/tools/garage-2.5.0-x86_64-linux.xz` beside the project. A shell beside it waits
//! on a pipe from the test process and stops it (and removes its directory) when the process
//! ends. A test that needs it and cannot start it fails, saying what is missing.

use std::io::Write;
use std::net::TcpListener;
use std::ops::Deref;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;

use crate::S3BlobStore;

pub const BUCKET: &str = "brcti";
pub const ACCESS_KEY: &str = "GK0b7c7a0e9d5f4e3a2b1c0d9e";
pub const SECRET_KEY: &str = "brcti-test-secret-0123456789abcdef0123456789";
pub const REGION: &str = "garage";

/// The test server of this process.
pub struct Server {
    /// `http://127.0.0.1:PORT` (the S3 API).
    pub endpoint: String,
    _guard: Mutex<Child>,
}

pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| match start() {
        Ok(s) => s,
        Err(e) => panic!("Garage (S3) is needed for this test and could not be started: {e}"),
    })
}

/// The environment variables a node (or any S3 client) needs to reach the test bucket.
pub fn env() -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL", server().endpoint.clone()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ]
}

/// The same as `--blob-store-option KEY=VALUE` flags.
pub fn options() -> Vec<String> {
    vec![
        format!("endpoint={}", server().endpoint),
        "allow_http=true".to_string(),
        format!("region={REGION}"),
        format!("access_key_id={ACCESS_KEY}"),
        format!("secret_access_key={SECRET_KEY}"),
    ]
}

pub fn builder() -> AmazonS3Builder {
    AmazonS3Builder::new()
        .with_endpoint(&server().endpoint)
        .with_allow_http(true)
        .with_region(REGION)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
}

fn find_garage(dir: &FsPath) -> Result<PathBuf, String> {
    if let Ok(bin) = std::env::var("BRCTI_GARAGE_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(found) = std::env::split_paths(&path)
        .map(|d| d.join("garage"))
        .find(|p| p.is_file())
    {
        return Ok(found);
    }
    let packed = FsPath::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/tools/garage-2.5.0-x86_64-linux.xz");
    if !packed.is_file() {
        return Err(format!(
            "no `garage` binary: not in BRCTI_GARAGE_BIN, not on PATH, and {} is missing \
             (build one with `cargo install garage --version 2.5.0 --locked`)",
            packed.display()
        ));
    }
    let bin = dir.join("garage");
    let out = std::fs::File::create(&bin).map_err(|e| e.to_string())?;
    let status = Command::new("xz")
        .arg("-dc")
        .arg(&packed)
        .stdout(out)
        .status()
        .map_err(|e| format!("running xz to unpack {}: {e}", packed.display()))?;
    if !status.success() {
        return Err(format!("xz could not unpack {}", packed.display()));
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(bin)
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn start() -> Result<Server, String> {
    let dir = tempfile::Builder::new()
        .prefix("br-cti-garage-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let garage = find_garage(&dir)?;
    let (rpc, s3, admin) = (free_port()?, free_port()?, free_port()?);
    let mut secret = [0u8; 32];
    for (i, b) in uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .chain(uuid::Uuid::new_v4().as_bytes())
        .enumerate()
    {
        secret[i] = *b;
    }
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let d = dir.display();
    let config = format!(
        "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
         replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
         rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
         [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
         root_domain = \".s3.garage.localhost\"\n\
         [admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\nadmin_token = \"{secret}\"\n"
    );
    std::fs::write(dir.join("garage.toml"), config).map_err(|e| e.to_string())?;
    let dir_q = shell_quote(&dir.to_string_lossy());
    let script = format!(
        "{garage} -c {dir_q}/garage.toml server --single-node --default-bucket >{dir_q}/log 2>&1 &
         server=$!
         cat >/dev/null
         kill \"$server\" 2>/dev/null
         wait \"$server\" 2>/dev/null
         rm -rf {dir_q}",
        garage = shell_quote(&garage.to_string_lossy()),
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
        .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
        .env("GARAGE_DEFAULT_BUCKET", BUCKET)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting garage: {e}"))?;
    let endpoint = format!("http://127.0.0.1:{s3}");
    // Ready when the bucket answers a signed request.
    let deadline = Instant::now() + Duration::from_secs(30);
    let probe_builder = AmazonS3Builder::new()
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .with_region(REGION)
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .with_retry(object_store::RetryConfig {
            max_retries: 0,
            ..Default::default()
        });
    let mut last = String::new();
    loop {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
            let _ = child.stdin.take().map(|mut s| s.flush());
            return Err(format!("garage did not become ready: {last}\n{log}"));
        }
        match S3BlobStore::open_with(&format!("s3://{BUCKET}/probe"), probe_builder.clone()) {
            Ok(_) => break,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Server {
        endpoint,
        _guard: Mutex::new(child),
    })
}

/// A store on a prefix of its own (new and empty) in the test bucket.
pub struct FreshStore {
    store: S3BlobStore,
    pub url: String,
}

impl Deref for FreshStore {
    type Target = S3BlobStore;
    fn deref(&self) -> &S3BlobStore {
        &self.store
    }
}

/// A new prefix's URL in the test bucket: `s3://brcti/t<pid>_<n>`.
pub fn new_url() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "s3://{BUCKET}/t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn fresh_store() -> FreshStore {
    let url = new_url();
    let store = S3BlobStore::open_with(&url, builder())
        .unwrap_or_else(|e| panic!("opening the test bucket {url}: {e}"));
    FreshStore { store, url }
}

/// The bytes at a blob's location (`s3://bucket/prefix/sha256/<hash>`, as `locate` says).
pub fn read_location(location: &str) -> Vec<u8> {
    use std::io::Read;
    let (url, hash) = location
        .rsplit_once("/sha256/")
        .unwrap_or_else(|| panic!("{location} is not a blob's location"));
    let store = S3BlobStore::open_with(url, builder()).unwrap();
    let hash = br_cti_domain::hash::Sha256Hex::parse(hash).unwrap();
    let mut bytes = Vec::new();
    br_cti_store::BlobStore::open(&store, &hash)
        .unwrap()
        .unwrap_or_else(|| panic!("no object at {location}"))
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

/// Objects of the store at `url` (`s3://bucket/prefix`): `(blobs, staging)`.
pub fn object_counts(url: &str) -> (usize, usize) {
    let store = S3BlobStore::open_with(url, builder()).unwrap();
    (store.objects_under("sha256"), store.staging_objects())
}

impl S3BlobStore {
    /// Objects under the staging prefix (uploads not yet moved to their hash).
    pub fn staging_objects(&self) -> usize {
        self.objects_under("staging")
    }

    /// Objects under `<prefix>/<sub>`.
    pub fn objects_under(&self, sub: &str) -> usize {
        use futures_util::StreamExt;
        let s = &self.shared;
        let prefix = s.prefix.child(sub);
        s.block_on(async { s.store.list(Some(&prefix)).collect::<Vec<_>>().await.len() })
    }
}
