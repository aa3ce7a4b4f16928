//! The object-storage backend of [`BlobStore`]: uploads and STIX files in an S3-compatible
//! bucket (AWS S3, Ceph RGW, Garage), through the `object_store` crate, so that several nodes
//! share them.
//!
//! Keys are content-addressed (`<prefix>/sha256/<hash>`): storing bytes that are there already
//! writes nothing. A staged blob keeps at most one part (`PART_BYTES`) in memory: a small one
//! is written with one `PUT` at commit, a larger one is sent as a multipart upload to a
//! staging key while it is written and hashed, then copied to its hash's key (server-side)
//! and the staging key removed. A blob dropped before its commit aborts its upload. Reads
//! are ranged `GET`s of `READ_BYTES` at a time behind `Read + Seek`, so no file is read into
//! memory whole.
//!
//! The traits are synchronous; the store drives `object_store`'s futures on a small runtime
//! of its own. Its methods must be called from plain threads (the jobs) or blocking tasks
//! (`spawn_blocking`), never from an async task itself.

#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, PutPayload};
use sha2::{Digest, Sha256};

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::io::ReadSeek;
use br_cti_store::{BlobStore, StagedBlob, StoredBlob};

/// Bytes of a multipart upload's part (S3's smallest part is 5 MiB).
pub const PART_BYTES: usize = 8 << 20;
/// Bytes a reader fetches at a time.
pub const READ_BYTES: usize = 4 << 20;

struct Shared {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    /// `s3://bucket/prefix`, for messages and `locate`.
    url: String,
    prefix: Path,
}

impl Shared {
    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    fn key(&self, hash: &Sha256Hex) -> Path {
        self.prefix.child("sha256").child(hash.as_str())
    }

    fn staging_key(&self) -> Path {
        self.prefix
            .child("staging")
            .child(uuid::Uuid::new_v4().to_string())
    }

    /// An object-store error as I/O: a missing object is `NotFound`, the rest names the store.
    fn io(&self, what: &str, e: object_store::Error) -> io::Error {
        match e {
            object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e),
            e => io::Error::other(format!("object store {}: {what}: {e}", self.url)),
        }
    }

    /// The size of an object, or `None` when there is none.
    fn head(&self, key: &Path) -> io::Result<Option<u64>> {
        match self.block_on(self.store.head(key)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.io("reading an object's size", e)),
        }
    }
}

/// Blobs in an S3-compatible bucket.
pub struct S3BlobStore {
    shared: Arc<Shared>,
}

impl S3BlobStore {
    /// Opens `s3://bucket[/prefix]` with the endpoint, region and credentials of the usual
    /// environment variables (`AWS_ENDPOINT_URL` or `AWS_ENDPOINT`, `AWS_REGION` or
    /// `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_ALLOW_HTTP=true` for an endpoint without TLS), and checks that the bucket can be
    /// written.
    /// `options` (`KEY=VALUE`, object_store's S3 keys such as `endpoint`, `region`,
    /// `allow_http`, `access_key_id`, `virtual_hosted_style_request`) override the environment.
    pub fn open(url: &str, options: &[String]) -> io::Result<Self> {
        let mut builder = AmazonS3Builder::from_env();
        for option in options {
            let invalid = |why: String| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("blob store option {option:?}: {why}"),
                )
            };
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| invalid("expected KEY=VALUE".into()))?;
            let key: AmazonS3ConfigKey = key.trim().parse().map_err(|e| {
                invalid(format!(
                    "{e} (keys: endpoint, region, allow_http, access_key_id, \
                     secret_access_key, session_token, virtual_hosted_style_request, …)"
                ))
            })?;
            builder = builder.with_config(key, value.trim());
        }
        Self::open_with(url, builder)
    }

    /// Opens with a builder configured by the caller (tests).
    pub fn open_with(url: &str, builder: AmazonS3Builder) -> io::Result<Self> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("blob store {url:?}: the URL must be s3://bucket[/prefix]"),
            )
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("blob store {url:?}: no bucket named (s3://bucket[/prefix])"),
            ));
        }
        let store = builder
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| io::Error::other(format!("blob store {url}: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("br-cti-s3")
            .enable_all()
            .build()?;
        let prefix = Path::from(prefix.trim_matches('/'));
        let shown = if prefix.as_ref().is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let s = Self {
            shared: Arc::new(Shared {
                store: Arc::new(store),
                runtime,
                url: shown,
                prefix,
            }),
        };
        s.check()?;
        Ok(s)
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> &str {
        &self.shared.url
    }
}

impl BlobStore for S3BlobStore {
    fn stage(&self) -> io::Result<Box<dyn StagedBlob>> {
        Ok(Box::new(Staged {
            shared: self.shared.clone(),
            hasher: Sha256::new(),
            written: 0,
            buffer: Vec::new(),
            upload: None,
        }))
    }

    fn put(&self, bytes: &[u8]) -> io::Result<StoredBlob> {
        let hash = Sha256Hex::from_digest(&Sha256::digest(bytes));
        put_whole(&self.shared, hash, bytes.to_vec())
    }

    fn open(&self, hash: &Sha256Hex) -> io::Result<Option<Box<dyn ReadSeek>>> {
        let key = self.shared.key(hash);
        let Some(size) = self.shared.head(&key)? else {
            return Ok(None);
        };
        Ok(Some(Box::new(RangeReader {
            shared: self.shared.clone(),
            key,
            size,
            pos: 0,
            buffer: Vec::new(),
            buffer_start: 0,
        })))
    }

    fn size(&self, hash: &Sha256Hex) -> io::Result<Option<u64>> {
        self.shared.head(&self.shared.key(hash))
    }

    /// One ranged `GET` of exactly the bytes asked for.
    fn read_range(&self, hash: &Sha256Hex, from: u64, len: u64) -> io::Result<Option<Vec<u8>>> {
        let shared = &self.shared;
        let key = shared.key(hash);
        let end = from.checked_add(len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "a range past 2^64 bytes")
        })?;
        if len == 0 {
            return shared.head(&key).map(|size| size.map(|_| Vec::new()));
        }
        let short = |size: u64| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{key}: bytes {from}..{end} of an object of {size}"),
            )
        };
        match shared.block_on(shared.store.get_range(&key, from..end)) {
            Ok(bytes) if bytes.len() as u64 == len => Ok(Some(bytes.to_vec())),
            Ok(bytes) => Err(short(from + bytes.len() as u64)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            // A range past the end is refused (416) or cut short, depending on the store.
            Err(e) => match shared.head(&key)? {
                None => Ok(None),
                Some(size) if end > size => Err(short(size)),
                Some(_) => Err(shared.io("reading a blob", e)),
            },
        }
    }

    fn locate(&self, hash: &Sha256Hex) -> String {
        format!("{}/sha256/{hash}", self.shared.url)
    }

    fn check(&self) -> io::Result<Option<u64>> {
        let s = &self.shared;
        let probe = s
            .prefix
            .child("probe")
            .child(uuid::Uuid::new_v4().to_string());
        s.block_on(s.store.put(&probe, PutPayload::from_static(b"br-cti")))
            .map_err(|e| s.io("writing a probe object", e))?;
        s.block_on(s.store.delete(&probe))
            .map_err(|e| s.io("removing the probe object", e))?;
        Ok(None)
    }

    fn is_remote(&self) -> bool {
        true
    }
}

/// Stores bytes whose hash is known under their key with one `PUT`, unless they are there.
fn put_whole(shared: &Shared, hash: Sha256Hex, bytes: Vec<u8>) -> io::Result<StoredBlob> {
    let key = shared.key(&hash);
    let size = bytes.len() as u64;
    if shared.head(&key)?.is_some() {
        return Ok(StoredBlob {
            hash,
            size,
            deduplicated: true,
        });
    }
    shared
        .block_on(shared.store.put(&key, PutPayload::from(bytes)))
        .map_err(|e| shared.io("writing a blob", e))?;
    Ok(StoredBlob {
        hash,
        size,
        deduplicated: false,
    })
}

/// A multipart upload under way, to a staging key.
struct Upload {
    key: Path,
    parts: Box<dyn MultipartUpload>,
}

struct Staged {
    shared: Arc<Shared>,
    hasher: Sha256,
    written: u64,
    /// Bytes not yet sent (less than a part).
    buffer: Vec<u8>,
    upload: Option<Upload>,
}

impl Staged {
    /// Sends the buffer as the next part, starting the multipart upload first if needed.
    fn send_part(&mut self) -> io::Result<()> {
        let shared = self.shared.clone();
        if self.upload.is_none() {
            let key = shared.staging_key();
            let parts = shared
                .block_on(shared.store.put_multipart(&key))
                .map_err(|e| shared.io("starting a multipart upload", e))?;
            self.upload = Some(Upload { key, parts });
        }
        let upload = self.upload.as_mut().expect("started above");
        let part = std::mem::take(&mut self.buffer);
        shared
            .block_on(upload.parts.put_part(PutPayload::from(part)))
            .map_err(|e| shared.io("sending a part of an upload", e))
    }
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = PART_BYTES - self.buffer.len();
        let n = buf.len().min(room);
        self.buffer.extend_from_slice(&buf[..n]);
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        if self.buffer.len() == PART_BYTES {
            self.send_part()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl StagedBlob for Staged {
    fn written(&self) -> u64 {
        self.written
    }

    fn commit(mut self: Box<Self>) -> io::Result<StoredBlob> {
        let hash = Sha256Hex::from_digest(&std::mem::take(&mut self.hasher).finalize());
        let shared = self.shared.clone();
        let Some(mut upload) = self.upload.take() else {
            let bytes = std::mem::take(&mut self.buffer);
            return put_whole(&shared, hash, bytes);
        };
        let size = self.written;
        if !self.buffer.is_empty() {
            let last = std::mem::take(&mut self.buffer);
            shared
                .block_on(upload.parts.put_part(PutPayload::from(last)))
                .map_err(|e| shared.io("sending the last part of an upload", e))?;
        }
        let finished = shared.block_on(upload.parts.complete());
        if let Err(e) = finished {
            let _ = shared.block_on(upload.parts.abort());
            return Err(shared.io("completing an upload", e));
        }
        let key = shared.key(&hash);
        let deduplicated = shared.head(&key)?.is_some();
        if !deduplicated {
            shared
                .block_on(shared.store.copy(&upload.key, &key))
                .map_err(|e| shared.io("moving an upload to its hash", e))?;
        }
        if let Err(e) = shared.block_on(shared.store.delete(&upload.key)) {
            tracing::warn!(key = %upload.key, "removing an upload's staging object failed: {e}");
        }
        Ok(StoredBlob {
            hash,
            size,
            deduplicated,
        })
    }
}

impl Drop for Staged {
    /// A blob dropped before its commit leaves nothing behind: its upload is aborted.
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            let shared = self.shared.clone();
            if let Err(e) = shared.block_on(upload.parts.abort()) {
                tracing::warn!(key = %upload.key, "aborting an unfinished upload failed: {e}");
            }
        }
    }
}

/// `Read + Seek` over an object, by ranged `GET`s.
struct RangeReader {
    shared: Arc<Shared>,
    key: Path,
    size: u64,
    pos: u64,
    buffer: Vec<u8>,
    buffer_start: u64,
}

impl Read for RangeReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let buffer_end = self.buffer_start + self.buffer.len() as u64;
        if self.pos < self.buffer_start || self.pos >= buffer_end {
            let end = (self.pos + READ_BYTES as u64).min(self.size);
            let shared = &self.shared;
            let bytes = shared
                .block_on(shared.store.get_range(&self.key, self.pos..end))
                .map_err(|e| shared.io("reading a blob", e))?;
            if bytes.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{}: the object ended early", self.key),
                ));
            }
            self.buffer = bytes.to_vec();
            self.buffer_start = self.pos;
        }
        let offset = (self.pos - self.buffer_start) as usize;
        let n = out.len().min(self.buffer.len() - offset);
        out[..n].copy_from_slice(&self.buffer[offset..offset + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for RangeReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom, Write};

    use super::*;
    use crate::testing::fresh_store;

    br_cti_store::blob_store_contract!(fresh_store);

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// A blob larger than a part goes up in parts while it is hashed; it reads back whole and
    /// at any offset; the same bytes again are recognised; nothing is left in staging.
    #[test]
    fn large_blobs_go_up_in_parts_and_read_back_by_ranges() {
        let store = fresh_store();
        let bytes = pattern(PART_BYTES * 2 + 12_345);
        let mut staged = store.stage().unwrap();
        for chunk in bytes.chunks(1 << 16) {
            staged.write_all(chunk).unwrap();
        }
        assert_eq!(staged.written(), bytes.len() as u64);
        let stored = staged.commit().unwrap();
        let expected = Sha256Hex::from_digest(&Sha256::digest(&bytes));
        assert_eq!(stored.hash, expected);
        assert!(!stored.deduplicated);
        assert_eq!(store.size(&expected).unwrap(), Some(bytes.len() as u64));
        let mut back = Vec::new();
        store
            .open(&expected)
            .unwrap()
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == bytes, "the bytes read back differ");
        let mut reader = store.open(&expected).unwrap().unwrap();
        let at = (PART_BYTES + 17) as u64;
        reader.seek(SeekFrom::Start(at)).unwrap();
        let mut some = [0u8; 100];
        reader.read_exact(&mut some).unwrap();
        assert_eq!(&some[..], &bytes[at as usize..at as usize + 100]);
        reader.seek(SeekFrom::End(-5)).unwrap();
        let mut tail = Vec::new();
        reader.read_to_end(&mut tail).unwrap();
        assert_eq!(tail, &bytes[bytes.len() - 5..]);
        // Again: a no-op that recognises the bytes.
        let mut again = store.stage().unwrap();
        again.write_all(&bytes).unwrap();
        assert!(again.commit().unwrap().deduplicated);
        assert_eq!(store.staging_objects(), 0, "staging keys are removed");
    }

    /// A blob dropped before its commit leaves nothing: no object, no staging key.
    #[test]
    fn a_dropped_upload_leaves_nothing() {
        let store = fresh_store();
        let bytes = pattern(PART_BYTES + 1);
        let mut staged = store.stage().unwrap();
        staged.write_all(&bytes).unwrap();
        drop(staged);
        let hash = Sha256Hex::from_digest(&Sha256::digest(&bytes));
        assert!(store.open(&hash).unwrap().is_none());
        assert_eq!(store.staging_objects(), 0);
    }

    /// A bucket that cannot be reached is refused at open, naming it.
    #[test]
    fn an_unreachable_store_is_named() {
        let builder = AmazonS3Builder::new()
            .with_endpoint("http://127.0.0.1:1")
            .with_allow_http(true)
            .with_region("garage")
            .with_access_key_id("GK000000000000000000000000")
            .with_secret_access_key("secret")
            .with_retry(object_store::RetryConfig {
                max_retries: 0,
                retry_timeout: std::time::Duration::from_millis(500),
                ..Default::default()
            });
        let err = S3BlobStore::open_with("s3://nowhere/p", builder)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("object store s3://nowhere/p"), "{err}");
        let err = S3BlobStore::open("http://x", &[])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("s3://bucket[/prefix]"), "{err}");
        let err = S3BlobStore::open("s3://b", &["colour=blue".into()])
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains("blob store option \"colour=blue\""), "{err}");
    }
}
