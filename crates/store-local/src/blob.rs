//! Content-addressed blobs on the local file system: `<root>/blobs/<aa>/<sha256>`.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::io::ReadSeek;
use br_cti_store::{BlobStore, StagedBlob, StoredBlob};

pub struct FsBlobStore {
    blobs: PathBuf,
    staging: PathBuf,
}

impl FsBlobStore {
    /// Opens (creating if needed) the blob store under `root`. Staged files live in
    /// `<root>/tmp` on the same file system, so that committing is an atomic rename.
    pub fn open(root: &Path) -> io::Result<Self> {
        let blobs = root.join("blobs");
        let staging = root.join("tmp");
        fs::create_dir_all(&blobs)?;
        // Absolute, so that the locations reported to clients are usable as they are.
        let blobs = blobs.canonicalize()?;
        fs::create_dir_all(&staging)?;
        // Staged files left by a crash are garbage: nothing refers to them.
        for entry in fs::read_dir(&staging)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("upload-") {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(Self { blobs, staging })
    }

    /// Every stored blob (finished files named by their hash) and its size, in no order.
    pub fn list(&self) -> io::Result<Vec<(Sha256Hex, u64)>> {
        let mut out = Vec::new();
        for prefix in fs::read_dir(&self.blobs)? {
            let prefix = prefix?;
            if !prefix.file_type()?.is_dir() {
                continue;
            }
            for blob in fs::read_dir(prefix.path())? {
                let blob = blob?;
                let name = blob.file_name();
                // Staging names start with a dot: only `<sha256>`.
                if let Some(hash) = name.to_str().and_then(|n| Sha256Hex::parse(n).ok()) {
                    out.push((hash, blob.metadata()?.len()));
                }
            }
        }
        Ok(out)
    }

    /// Copies every stored file of the data directory `root` into the blob store of the data
    /// directory `dest` (files are immutable: one already there with the same size is kept),
    /// without touching `root` (a node may be running on it: its staged files stay).
    /// Answers the files and bytes copied.
    pub fn copy_all(root: &Path, dest: &Path) -> io::Result<(u64, u64)> {
        let target = dest.join("blobs");
        let (mut files, mut bytes) = (0u64, 0u64);
        for prefix in fs::read_dir(root.join("blobs"))? {
            let prefix = prefix?;
            if !prefix.file_type()?.is_dir() {
                continue;
            }
            let into = target.join(prefix.file_name());
            fs::create_dir_all(&into)?;
            for blob in fs::read_dir(prefix.path())? {
                let blob = blob?;
                let name = blob.file_name();
                // Only finished files: `<sha256>` (staging names start with a dot).
                if name.len() != 64
                    || !name
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit())
                {
                    continue;
                }
                let size = blob.metadata()?.len();
                let to = into.join(&name);
                if fs::metadata(&to).is_ok_and(|m| m.len() == size) {
                    continue;
                }
                let partial = into.join(format!(".{}.partial", name.to_string_lossy()));
                fs::copy(blob.path(), &partial)?;
                File::open(&partial)?.sync_all()?;
                fs::rename(&partial, &to)?;
                files += 1;
                bytes += size;
            }
            File::open(&into)?.sync_all()?;
        }
        Ok((files, bytes))
    }

    fn path_of(&self, hash: &Sha256Hex) -> PathBuf {
        let h = hash.as_str();
        self.blobs.join(&h[..2]).join(h)
    }
}

impl BlobStore for FsBlobStore {
    fn stage(&self) -> io::Result<Box<dyn StagedBlob>> {
        let tmp = tempfile::Builder::new()
            .prefix("upload-")
            .tempfile_in(&self.staging)?;
        let file = tmp.reopen()?;
        Ok(Box::new(FsStagedBlob {
            tmp,
            out: BufWriter::with_capacity(256 * 1024, file),
            hasher: Sha256::new(),
            written: 0,
            blobs: self.blobs.clone(),
        }))
    }

    /// Hashes first (bytes already stored are not written again), then writes the file with
    /// direct I/O under a staging name, syncs it, renames it and syncs the directory.
    fn put(&self, bytes: &[u8]) -> io::Result<StoredBlob> {
        let hash = Sha256Hex::from_digest(&Sha256::digest(bytes));
        let size = bytes.len() as u64;
        let dest = self.path_of(&hash);
        if dest.exists() {
            return Ok(StoredBlob {
                hash,
                size,
                deduplicated: true,
            });
        }
        let tmp = tempfile::Builder::new()
            .prefix("upload-")
            .make_in(&self.staging, |path| {
                super::direct::create_file(path, bytes, true).map(|_| ())
            })?;
        install(tmp.into_temp_path(), &dest)?;
        Ok(StoredBlob {
            hash,
            size,
            deduplicated: false,
        })
    }

    fn open(&self, hash: &Sha256Hex) -> io::Result<Option<Box<dyn ReadSeek>>> {
        match File::open(self.path_of(hash)) {
            Ok(f) => Ok(Some(Box::new(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn locate(&self, hash: &Sha256Hex) -> String {
        self.path_of(hash).display().to_string()
    }

    fn check(&self) -> io::Result<Option<u64>> {
        let probe = tempfile::Builder::new()
            .prefix("ready-")
            .tempfile_in(&self.staging)?;
        probe.as_file().write_all(b"ready")?;
        drop(probe);
        Ok(free_bytes(&self.blobs))
    }

    fn size(&self, hash: &Sha256Hex) -> io::Result<Option<u64>> {
        match fs::metadata(self.path_of(hash)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

struct FsStagedBlob {
    tmp: NamedTempFile,
    out: BufWriter<File>,
    hasher: Sha256,
    written: u64,
    blobs: PathBuf,
}

impl Write for FsStagedBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl StagedBlob for FsStagedBlob {
    fn written(&self) -> u64 {
        self.written
    }

    fn commit(self: Box<Self>) -> io::Result<StoredBlob> {
        let FsStagedBlob {
            tmp,
            out,
            hasher,
            written,
            blobs,
        } = *self;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        let hash = Sha256Hex::from_digest(&hasher.finalize());
        let dest = blobs.join(&hash.as_str()[..2]).join(hash.as_str());
        if dest.exists() {
            // Same bytes, same name: keep the stored copy; `tmp` is removed on drop.
            return Ok(StoredBlob {
                hash,
                size: written,
                deduplicated: true,
            });
        }
        install(tmp.into_temp_path(), &dest)?;
        Ok(StoredBlob {
            hash,
            size: written,
            deduplicated: false,
        })
    }
}

/// Moves a complete, synced staged file to its blob path and syncs the directory. Two
/// concurrent stores of the same bytes both rename a complete, identical file onto the same
/// name: whichever lands last, readers always see a whole file.
/// Bytes available to an unprivileged writer on the file system holding `path`.
fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

fn install(tmp: tempfile::TempPath, dest: &Path) -> io::Result<()> {
    let dir = dest.parent().expect("blob paths have a parent");
    fs::create_dir_all(dir)?;
    tmp.persist(dest).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the contract cannot see: staged files live in `tmp/` and none is left behind,
    /// whether the blob was committed, deduplicated or dropped.
    #[test]
    fn staging_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        store.put(b"hello").unwrap();
        assert!(store.put(b"hello").unwrap().deduplicated);
        let mut dropped = store.stage().unwrap();
        dropped.write_all(b"partial").unwrap();
        drop(dropped);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
