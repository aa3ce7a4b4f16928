//! Writing a whole file from memory without going through the page cache (`O_DIRECT`).
//!
//! A conversion writes gigabytes that nothing reads back soon; copying them into the page cache
//! costs more CPU than producing them on this kind of machine (a virtual machine whose fresh
//! page-cache pages are expensive to touch). Direct I/O moves the bytes from a small aligned
//! buffer to the disk instead. File systems that refuse it (tmpfs, some network file systems)
//! get an ordinary buffered write; the bytes on disk are the same either way.
//!
//! The one module of the workspace with unsafe code (denied everywhere else by the workspace
//! lints): the aligned buffer below, whose SAFETY note says why it is sound.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Alignment of buffers, lengths and offsets for direct I/O: 4096 satisfies every block
/// device's logical block size.
const ALIGN: usize = 4096;
/// Bytes moved per direct write (the aligned buffer's size).
const CHUNK: usize = 1 << 20;

#[repr(C, align(4096))]
#[derive(Clone, Copy)]
struct Block([u8; ALIGN]);

/// A buffer whose address is 4096-aligned, reused by the thread that owns it.
struct Aligned(Vec<Block>);

impl Aligned {
    fn new(len: usize) -> Self {
        Self(vec![Block([0; ALIGN]); len.div_ceil(ALIGN)])
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.0.len() * ALIGN;
        // SAFETY: `Block` is `repr(C)` around a byte array with no padding (its size equals its
        // alignment), so the vector's storage is `len` initialised bytes, borrowed mutably for
        // as long as `self` is.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<u8>(), len) }
    }
}

thread_local! {
    static BUFFER: std::cell::RefCell<Option<Aligned>> = const { std::cell::RefCell::new(None) };
}

/// How [`create_file`] wrote the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Written {
    Direct,
    Buffered,
}

/// Creates `path` (which must not exist) holding exactly `bytes`, synced to disk when `sync`.
/// Uses direct I/O where the file system allows it, a buffered write otherwise. On an error
/// the file is removed (unless it existed before: that is an `AlreadyExists` error).
pub(crate) fn create_file(path: &Path, bytes: &[u8], sync: bool) -> io::Result<Written> {
    let direct = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(path);
    let refused = |e: &io::Error| e.raw_os_error() == Some(libc::EINVAL);
    match direct {
        Ok(file) => match write_direct(&file, bytes).and_then(|()| sync_if(&file, sync)) {
            Ok(()) => return Ok(Written::Direct),
            // Refused by the first write (some file systems accept the flag, not the I/O):
            // start again buffered.
            Err(e) if refused(&e) => std::fs::remove_file(path)?,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        },
        Err(e) if refused(&e) => {}
        Err(e) => return Err(e),
    }
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    match file.write_all(bytes).and_then(|()| sync_if(&file, sync)) {
        Ok(()) => Ok(Written::Buffered),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

fn sync_if(file: &File, sync: bool) -> io::Result<()> {
    if sync { file.sync_all() } else { Ok(()) }
}

fn write_direct(file: &File, bytes: &[u8]) -> io::Result<()> {
    BUFFER.with_borrow_mut(|buffer| {
        let buffer = buffer
            .get_or_insert_with(|| Aligned::new(CHUNK))
            .bytes_mut();
        let mut offset = 0u64;
        for chunk in bytes.chunks(CHUNK) {
            // The last chunk is padded to a whole block; the padding is cut off below.
            let padded = chunk.len().next_multiple_of(ALIGN);
            buffer[..chunk.len()].copy_from_slice(chunk);
            buffer[chunk.len()..padded].fill(0);
            file.write_all_at(&buffer[..padded], offset)?;
            offset += padded as u64;
        }
        io::Result::Ok(())
    })?;
    if !bytes.len().is_multiple_of(ALIGN) {
        file.set_len(bytes.len() as u64)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hold_exactly_the_bytes_whatever_their_length() {
        let dir = tempfile::tempdir().unwrap();
        let ext4 = is_ext4(dir.path());
        for len in [
            0,
            1,
            ALIGN - 1,
            ALIGN,
            ALIGN + 1,
            CHUNK - 1,
            CHUNK,
            CHUNK + 7,
            3 * CHUNK + ALIGN,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let path = dir.path().join(format!("f{len}"));
            let how = create_file(&path, &bytes, len % 2 == 0).unwrap();
            if ext4 {
                assert_eq!(how, Written::Direct, "ext4 takes direct I/O");
            }
            assert_eq!(std::fs::read(&path).unwrap(), bytes, "length {len}");
        }
    }

    fn is_ext4(path: &Path) -> bool {
        rustix::fs::statfs(path).is_ok_and(|st| st.f_type == 0xEF53)
    }

    #[test]
    fn an_existing_file_is_an_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"before").unwrap();
        let e = create_file(&path, b"after", true).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"before");
    }

    #[test]
    fn tmpfs_files_hold_the_bytes() {
        // /dev/shm is a tmpfs; kernels before 6.6 refuse O_DIRECT there (the buffered path).
        let Ok(dir) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let path = dir.path().join("f");
        let bytes = vec![7u8; ALIGN + 3];
        create_file(&path, &bytes, true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
}
