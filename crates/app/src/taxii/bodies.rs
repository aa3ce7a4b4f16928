//! The JSON text of the objects of a TAXII page. A dataset's objects are lines of its STIX
//! files, read from the blob store: one read per file of the page.
//!
//! On an object store each read is a request, and a request's time varies: Garage, for one,
//! does not set `TCP_NODELAY`, so about a third of its answers wait out a 40 ms delayed ACK.
//! A client paging with `next` asks for the pages in order, so there the node reads ahead:
//! when it serves a page that has more after it, a worker reads the spans of the next pages
//! into a small cache of immutable spans (files are content-addressed), off the request's path.
//! A request finds its span there, or waits for the read under way, or reads it itself.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::model::{BodyRef, TaxiiBody, TaxiiObject, TaxiiQuery};
use br_cti_store::{BlobStore, RecordStore};

use crate::error::AppError;

/// Most bytes read from one STIX file in one go to serve a page: a page's objects from one
/// file usually lie side by side (a file is about 1.5 MB), and one read per file serves them;
/// objects further apart than this (a filtered page) are read one by one, and never ahead.
const SPAN_BYTES: u64 = 16 << 20;

/// How the node reads ahead for clients paging in order (on an object store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadAhead {
    /// Pages read ahead of the one served.
    pub pages: usize,
    /// Bytes the spans read ahead may hold, all clients together.
    pub cache_bytes: usize,
    /// Threads reading ahead.
    pub workers: usize,
}

impl ReadAhead {
    /// Two pages ahead (the reads of one page hide behind the client's handling of two), in
    /// 64 MiB: at 1,000 dataset objects a page (about 0.9 MB), room for 30 clients paging at
    /// once.
    pub const OBJECT_STORE: ReadAhead = ReadAhead {
        pages: 2,
        cache_bytes: 64 << 20,
        workers: 2,
    };
}

/// Longest a request waits for a read ahead under way before it reads for itself.
const WAIT_FOR_READ_AHEAD: Duration = Duration::from_secs(5);

/// Reads the bodies of pages; with a [`ReadAhead`], also the pages that follow.
pub struct PageBodies {
    blobs: Arc<dyn BlobStore>,
    cache: Arc<SpanCache>,
    ahead: Option<(SyncSender<Ahead>, usize)>,
}

/// A read-ahead request: the pages after `query.after` in `collection`.
struct Ahead {
    collection: String,
    query: TaxiiQuery,
    pages: usize,
}

impl PageBodies {
    /// Reads every body from `blobs` as a request asks for it.
    pub fn direct(blobs: Arc<dyn BlobStore>) -> Self {
        Self {
            blobs,
            cache: Arc::new(SpanCache::new(0)),
            ahead: None,
        }
    }

    /// Reads ahead as `how` says, with threads that page `db` (a connection of their own).
    pub fn reading_ahead(
        blobs: Arc<dyn BlobStore>,
        db: Arc<dyn RecordStore>,
        how: ReadAhead,
    ) -> std::io::Result<Self> {
        let cache = Arc::new(SpanCache::new(how.cache_bytes));
        // A short queue: when the workers fall behind, later requests are not read ahead.
        let (tx, rx) = sync_channel::<Ahead>(4 * how.workers.max(1));
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..how.workers.max(1) {
            let (rx, db, blobs, cache) = (rx.clone(), db.clone(), blobs.clone(), cache.clone());
            std::thread::Builder::new()
                .name(format!("taxii-read-ahead-{n}"))
                .spawn(move || read_ahead_worker(&rx, &*db, &*blobs, &cache))?;
        }
        Ok(Self {
            blobs,
            cache,
            ahead: Some((tx, how.pages)),
        })
    }

    /// The JSON text of each object of a page of `collection` read with `query`, in its order;
    /// when `more` pages follow, the next ones are read ahead (when this reader does).
    pub fn page_texts(
        &self,
        collection: &str,
        query: &TaxiiQuery,
        rows: &[TaxiiObject],
        more: bool,
    ) -> Result<Vec<String>, AppError> {
        if let (Some((tx, pages)), Some(last), true) = (&self.ahead, rows.last(), more) {
            let mut next = query.clone();
            next.after = last.position;
            let ahead = Ahead {
                collection: collection.to_string(),
                query: next,
                pages: *pages,
            };
            match tx.try_send(ahead) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => {
                    tracing::warn!("the TAXII read-ahead threads have stopped")
                }
            }
        }
        self.texts(rows, SPAN_BYTES)
    }

    fn texts(&self, rows: &[TaxiiObject], span_bytes: u64) -> Result<Vec<String>, AppError> {
        let (mut out, files) = spans_of(rows);
        for FileSpan {
            file,
            lo,
            hi,
            wanted,
        } in files
        {
            let fault = |cause: String| {
                AppError::internal(
                    "reading a STIX file behind a TAXII object",
                    format!("{file}: {cause}"),
                )
            };
            // One request per read on an object store: exactly the bytes wanted.
            let read = |from: u64, len: u64| -> Result<Vec<u8>, AppError> {
                self.blobs
                    .read_range(file, from, len)
                    .map_err(|e| fault(format!("bytes {from}..{}: {e}", from + len)))?
                    .ok_or_else(|| fault("the file is missing".into()))
            };
            let span = if hi - lo <= span_bytes {
                Some(match self.cache.get(file, lo, hi) {
                    Some(cached) => cached,
                    None => Span {
                        from: lo,
                        bytes: Arc::new(read(lo, hi - lo)?),
                    },
                })
            } else {
                None
            };
            for (i, at) in wanted {
                let bytes = match &span {
                    Some(span) => span.slice(at.offset, at.len).to_vec(),
                    None => read(at.offset, u64::from(at.len))?,
                };
                // A line the publisher took from this file was a JSON object; anything else
                // means the file is not the one it read.
                let text = String::from_utf8(bytes)
                    .ok()
                    .filter(|t| t.starts_with('{') && t.ends_with('}'))
                    .ok_or_else(|| {
                        fault(format!(
                            "bytes {}..{} are not the object {}",
                            at.offset,
                            at.offset + u64::from(at.len),
                            rows[i].id
                        ))
                    })?;
                out[i] = text;
            }
        }
        Ok(out)
    }
}

/// The objects of a page kept in one STIX file: the bytes `lo..hi` hold them all.
struct FileSpan<'a> {
    file: &'a Sha256Hex,
    lo: u64,
    hi: u64,
    /// Each object's place in the page and its bytes.
    wanted: Vec<(usize, &'a BodyRef)>,
}

/// The texts kept with the versions (the others empty), and the page's files in the order
/// they first appear.
fn spans_of(rows: &[TaxiiObject]) -> (Vec<String>, Vec<FileSpan<'_>>) {
    let mut out: Vec<String> = vec![String::new(); rows.len()];
    let mut files: Vec<FileSpan> = Vec::new();
    let mut slot: HashMap<&Sha256Hex, usize> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        match &row.body {
            TaxiiBody::Text(text) => out[i] = text.clone(),
            TaxiiBody::InFile(at) => {
                let n = *slot.entry(&at.file).or_insert_with(|| {
                    files.push(FileSpan {
                        file: &at.file,
                        lo: at.offset,
                        hi: at.offset,
                        wanted: Vec::new(),
                    });
                    files.len() - 1
                });
                let f = &mut files[n];
                f.lo = f.lo.min(at.offset);
                f.hi = f.hi.max(at.offset + u64::from(at.len));
                f.wanted.push((i, at));
            }
        }
    }
    (out, files)
}

/// Reads ahead what the queue asks for until the reader is dropped. A read that fails is left
/// to the request, which reports it.
fn read_ahead_worker(
    rx: &Mutex<Receiver<Ahead>>,
    db: &dyn RecordStore,
    blobs: &dyn BlobStore,
    cache: &SpanCache,
) {
    loop {
        let Ok(Ahead {
            collection,
            mut query,
            pages,
        }) = lock(rx).recv()
        else {
            return;
        };
        for _ in 0..pages {
            let (rows, more) = match db.taxii_page(&collection, &query) {
                Ok(page) => page,
                Err(e) => {
                    tracing::debug!(error = %e, collection, "TAXII read-ahead: paging");
                    break;
                }
            };
            for span in spans_of(&rows).1 {
                if span.hi - span.lo > SPAN_BYTES {
                    continue;
                }
                let Some(claim) = cache.claim(span.file, span.lo, span.hi) else {
                    continue;
                };
                match blobs.read_range(span.file, span.lo, span.hi - span.lo) {
                    Ok(Some(bytes)) => claim.fill(bytes),
                    Ok(None) => {}
                    Err(e) => tracing::debug!(error = %e, file = %span.file, "TAXII read-ahead"),
                }
            }
            match rows.last() {
                Some(last) if more => query.after = last.position,
                _ => break,
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Bytes `from..from + bytes.len()` of a file.
#[derive(Clone)]
struct Span {
    from: u64,
    bytes: Arc<Vec<u8>>,
}

impl Span {
    fn slice(&self, offset: u64, len: u32) -> &[u8] {
        let start = (offset - self.from) as usize;
        &self.bytes[start..start + len as usize]
    }

    fn covers(&self, lo: u64, hi: u64) -> bool {
        self.from <= lo && hi <= self.from + self.bytes.len() as u64
    }
}

/// Spans of files read ahead, least recently used first, within a budget of bytes, and the
/// spans being read.
struct SpanCache {
    budget: usize,
    state: Mutex<CacheState>,
    /// Signalled when a read under way ends.
    settled: Condvar,
}

#[derive(Default)]
struct CacheState {
    spans: VecDeque<(Sha256Hex, Span)>,
    bytes: usize,
    reading: Vec<(Sha256Hex, u64, u64)>,
}

impl CacheState {
    fn find(&self, file: &Sha256Hex, lo: u64, hi: u64) -> Option<usize> {
        self.spans
            .iter()
            .position(|(f, s)| f == file && s.covers(lo, hi))
    }

    fn being_read(&self, file: &Sha256Hex, lo: u64, hi: u64) -> bool {
        self.reading
            .iter()
            .any(|(f, from, to)| f == file && *from <= lo && hi <= *to)
    }
}

impl SpanCache {
    fn new(budget: usize) -> Self {
        Self {
            budget,
            state: Mutex::new(CacheState::default()),
            settled: Condvar::new(),
        }
    }

    /// The cached span holding `lo..hi` of `file`, waiting for a read under way that will
    /// hold it; `None` when none will.
    fn get(&self, file: &Sha256Hex, lo: u64, hi: u64) -> Option<Span> {
        if self.budget == 0 {
            return None;
        }
        let deadline = Instant::now() + WAIT_FOR_READ_AHEAD;
        let mut state = lock(&self.state);
        loop {
            if let Some(at) = state.find(file, lo, hi) {
                // The most recently used goes last.
                let entry = state.spans.remove(at).expect("found");
                let span = entry.1.clone();
                state.spans.push_back(entry);
                return Some(span);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !state.being_read(file, lo, hi) || left.is_zero() {
                return None;
            }
            state = self
                .settled
                .wait_timeout(state, left)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
    }

    /// Marks `lo..hi` of `file` as being read, unless it is cached or being read already.
    fn claim<'a>(&'a self, file: &Sha256Hex, lo: u64, hi: u64) -> Option<Claim<'a>> {
        if (hi - lo) as usize > self.budget {
            return None;
        }
        let mut state = lock(&self.state);
        if state.find(file, lo, hi).is_some() || state.being_read(file, lo, hi) {
            return None;
        }
        state.reading.push((file.clone(), lo, hi));
        Some(Claim {
            cache: self,
            key: (file.clone(), lo, hi),
        })
    }

    #[cfg(test)]
    fn cached_bytes(&self) -> usize {
        lock(&self.state).bytes
    }
}

/// A span being read: [`Claim::fill`] caches it; dropped unfilled (the read failed, or the
/// thread panicked), it wakes the requests that waited for it, which then read for themselves.
struct Claim<'a> {
    cache: &'a SpanCache,
    key: (Sha256Hex, u64, u64),
}

impl Claim<'_> {
    fn fill(self, bytes: Vec<u8>) {
        let mut state = lock(&self.cache.state);
        state.bytes += bytes.len();
        state.spans.push_back((
            self.key.0.clone(),
            Span {
                from: self.key.1,
                bytes: Arc::new(bytes),
            },
        ));
        while state.bytes > self.cache.budget {
            let Some((_, evicted)) = state.spans.pop_front() else {
                break;
            };
            state.bytes -= evicted.bytes.len();
        }
        drop(state);
        // The mark goes as `self` drops.
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let mut state = lock(&self.cache.state);
        if let Some(at) = state.reading.iter().position(|k| *k == self.key) {
            state.reading.swap_remove(at);
        }
        drop(state);
        self.cache.settled.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use br_cti_domain::model::{NewTaxiiObject, Position, VersionMatch};
    use br_cti_domain::vocab::Tlp;
    use br_cti_store::TaxiiStore;
    use br_cti_store_local::FsBlobStore;

    fn row(n: i64, body: TaxiiBody) -> TaxiiObject {
        TaxiiObject {
            position: Position::from_backend(n),
            id: format!("x--{n}"),
            kind: "x".into(),
            version: String::new(),
            spec_version: "2.1".into(),
            date_added: n,
            body,
        }
    }

    fn hash(c: char) -> Sha256Hex {
        Sha256Hex::parse(&c.to_string().repeat(64)).unwrap()
    }

    #[test]
    fn bodies_are_read_from_their_files_one_read_per_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FsBlobStore::open(dir.path()).unwrap());
        let reader = PageBodies::direct(store.clone());
        let lines = ["{\"a\":1}", "{\"b\":22}", "{\"c\":333}"];
        let text = format!("  {}\n{}\r\n\n{}", lines[0], lines[1], lines[2]);
        let file = store.put(text.as_bytes()).unwrap().hash;
        let at = |line: usize| {
            TaxiiBody::InFile(BodyRef {
                file: file.clone(),
                offset: text.find(lines[line]).unwrap() as u64,
                len: lines[line].len() as u32,
            })
        };
        let rows = [
            row(1, at(2)),
            row(2, TaxiiBody::Text("{\"kept\":true}".into())),
            row(3, at(0)),
            row(4, at(1)),
        ];
        assert_eq!(
            reader.texts(&rows, SPAN_BYTES).unwrap(),
            [lines[2], "{\"kept\":true}", lines[0], lines[1]]
        );
        // Objects further apart than a span are read one by one: the same texts.
        assert_eq!(
            reader.texts(&rows, 4).unwrap(),
            reader.texts(&rows, SPAN_BYTES).unwrap()
        );
        // Bytes past the file's end.
        let far = TaxiiBody::InFile(BodyRef {
            file: file.clone(),
            offset: 100,
            len: 5,
        });
        let both = [row(1, at(0)), row(2, far)];
        let err = reader.texts(&both, SPAN_BYTES).unwrap_err();
        assert!(err.to_string().contains("bytes 2..105"), "{err}");
        let err = reader.texts(&both, 4).unwrap_err();
        assert!(err.to_string().contains("bytes 100..105"), "{err}");
        // Bytes that are not the object, and a file that is gone: internal faults that say
        // which file and which bytes.
        let shifted = TaxiiBody::InFile(BodyRef {
            file: file.clone(),
            offset: 1,
            len: 7,
        });
        let err = reader.texts(&[row(7, shifted)], SPAN_BYTES).unwrap_err();
        assert!(
            err.to_string()
                .contains("bytes 1..8 are not the object x--7"),
            "{err}"
        );
        let gone = TaxiiBody::InFile(BodyRef {
            file: hash('e'),
            offset: 0,
            len: 2,
        });
        let err = reader.texts(&[row(1, gone)], SPAN_BYTES).unwrap_err();
        assert!(err.to_string().contains("the file is missing"), "{err}");
    }

    /// A blob store on a directory that records every ranged read.
    struct Counting {
        inner: FsBlobStore,
        reads: Mutex<Vec<(u64, u64)>>,
    }

    impl BlobStore for Counting {
        fn stage(&self) -> std::io::Result<Box<dyn br_cti_store::StagedBlob>> {
            self.inner.stage()
        }
        fn open(
            &self,
            hash: &Sha256Hex,
        ) -> std::io::Result<Option<Box<dyn br_cti_domain::io::ReadSeek>>> {
            self.inner.open(hash)
        }
        fn read_range(
            &self,
            hash: &Sha256Hex,
            from: u64,
            len: u64,
        ) -> std::io::Result<Option<Vec<u8>>> {
            lock(&self.reads).push((from, len));
            self.inner.read_range(hash, from, len)
        }
        fn size(&self, hash: &Sha256Hex) -> std::io::Result<Option<u64>> {
            self.inner.size(hash)
        }
        fn locate(&self, hash: &Sha256Hex) -> String {
            self.inner.locate(hash)
        }
        fn check(&self) -> std::io::Result<Option<u64>> {
            self.inner.check()
        }
    }

    /// A client paging in order: serving the first page reads the next two ahead, and those
    /// pages are then served without a read of their own, with the same texts.
    #[test]
    fn a_client_paging_in_order_finds_the_next_pages_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(br_cti_store_local::SqliteStore::open(&dir.path().join("db")).unwrap());
        let store = Arc::new(Counting {
            inner: FsBlobStore::open(&dir.path().join("blobs")).unwrap(),
            reads: Mutex::new(Vec::new()),
        });
        let lines: Vec<String> = (0..6).map(|n| format!("{{\"n\":{n}}}")).collect();
        let text = lines.join("\n");
        let file = store.put(text.as_bytes()).unwrap().hash;
        let objects: Vec<NewTaxiiObject> = lines
            .iter()
            .enumerate()
            .map(|(n, line)| NewTaxiiObject {
                id: format!("x--{n}"),
                kind: "x".into(),
                version: String::new(),
                version_us: 0,
                spec_version: "2.1".into(),
                body: TaxiiBody::InFile(BodyRef {
                    file: file.clone(),
                    offset: text.find(line.as_str()).unwrap() as u64,
                    len: line.len() as u32,
                }),
                tlp: Tlp::Clear,
            })
            .collect();
        db.taxii_add("c", &objects, None).unwrap();
        let reader = PageBodies::reading_ahead(
            store.clone(),
            db.clone(),
            ReadAhead {
                pages: 2,
                cache_bytes: 1 << 20,
                workers: 1,
            },
        )
        .unwrap();
        let mut query = TaxiiQuery {
            after: Position::START,
            max_tlp: Tlp::Red,
            added_after: None,
            limit: 2,
            ids: vec![],
            types: vec![],
            versions: vec![VersionMatch::Last],
            spec_versions: vec![],
        };
        let mut served = Vec::new();
        for page in 0..3 {
            let (rows, more) = db.taxii_page("c", &query).unwrap();
            assert_eq!(more, page < 2);
            served.extend(reader.page_texts("c", &query, &rows, more).unwrap());
            if page == 0 {
                // The request read its own span; the worker reads the next two pages' spans
                // (objects 2-3 and 4-5: 15 and 15 bytes).
                let deadline = Instant::now() + Duration::from_secs(10);
                while reader.cache.cached_bytes() < 30 {
                    assert!(Instant::now() < deadline, "nothing was read ahead");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            query.after = rows.last().unwrap().position;
        }
        assert_eq!(served, lines);
        let at = |n: usize| text.find(lines[n].as_str()).unwrap() as u64;
        assert_eq!(
            *lock(&store.reads),
            [(0, at(1) + 7), (at(2), 15), (at(4), 15)],
            "one read per page, two of them ahead"
        );
    }

    /// A request whose span is being read waits for that read; when the read fails, the
    /// request is told at once and reads for itself.
    #[test]
    fn a_request_waits_for_the_read_under_way() {
        let cache = SpanCache::new(100);
        let file = hash('a');
        assert!(
            cache.get(&file, 0, 4).is_none(),
            "nothing cached, nothing read"
        );
        std::thread::scope(|s| {
            let claim = cache.claim(&file, 10, 20).unwrap();
            assert!(cache.claim(&file, 12, 15).is_none(), "being read already");
            let waiter = s.spawn(|| cache.get(&file, 12, 15).map(|s| s.slice(12, 3).to_vec()));
            std::thread::sleep(Duration::from_millis(50));
            claim.fill((10..20).collect());
            assert_eq!(waiter.join().unwrap(), Some(vec![12, 13, 14]));

            let claim = cache.claim(&file, 30, 40).unwrap();
            let started = Instant::now();
            let waiter = s.spawn(|| cache.get(&file, 30, 40).is_none());
            std::thread::sleep(Duration::from_millis(50));
            drop(claim);
            assert!(waiter.join().unwrap());
            assert!(started.elapsed() < WAIT_FOR_READ_AHEAD);
        });
        // A span outside any read is not waited for.
        assert!(cache.get(&file, 5, 15).is_none());
    }

    /// The cache keeps to its budget, dropping the least recently used span first, and does
    /// not take a span larger than the whole budget.
    #[test]
    fn the_cache_keeps_to_its_budget() {
        let cache = SpanCache::new(10);
        let (a, b, c) = (hash('a'), hash('b'), hash('c'));
        cache.claim(&a, 0, 4).unwrap().fill(vec![1; 4]);
        cache.claim(&b, 0, 4).unwrap().fill(vec![2; 4]);
        assert!(cache.get(&a, 1, 3).is_some());
        cache.claim(&c, 0, 4).unwrap().fill(vec![3; 4]);
        assert_eq!(cache.cached_bytes(), 8);
        assert!(
            cache.get(&b, 0, 4).is_none(),
            "the least recently used went"
        );
        assert!(cache.get(&a, 0, 4).is_some());
        assert!(cache.get(&c, 0, 4).is_some());
        assert!(cache.claim(&b, 0, 11).is_none(), "larger than the budget");
        // Without a budget nothing is cached or waited for.
        let none = SpanCache::new(0);
        assert!(none.claim(&a, 0, 1).is_none());
        assert!(none.get(&a, 0, 1).is_none());
    }
}
