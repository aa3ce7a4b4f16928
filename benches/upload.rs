//! Upload benchmark: streams a large file (default 1 GiB) to a real release `br-cti serve` over
//! loopback, several times, and prints MB/s and the server's peak RSS (VmHWM).
//!
//!     cargo bench --bench upload
//!     BENCH_UPLOAD_MB=256 BENCH_RUNS=5 cargo bench --bench upload
//!
//! Each run uploads different bytes (so deduplication cannot shortcut it) into a fresh data
//! directory; the server is restarted per run so that its peak RSS belongs to that run.

#[path = "../tests/it/common/mod.rs"]
mod common;

use std::time::Instant;

use common::TestServer;
use reqwest::multipart;

/// 16 MiB of deterministic pseudo-random bytes (xorshift64); the upload body is 1 MiB slices
/// of it (zero-copy), preceded by a per-run header so that every run has its own hash.
fn noise() -> bytes::Bytes {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = Vec::with_capacity(16 << 20);
    while buf.len() < 16 << 20 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        buf.extend_from_slice(&state.to_le_bytes());
    }
    buf.into()
}

fn body(noise: &bytes::Bytes, run: u64, size: u64) -> reqwest::Body {
    const CHUNK: usize = 1 << 20;
    let header = bytes::Bytes::from(format!("br-cti upload benchmark run {run}\n"));
    let mut left = size - header.len() as u64;
    let mut chunks = vec![header];
    let mut offset = 0;
    while left > 0 {
        let n = (CHUNK as u64).min(left) as usize;
        if offset + n > noise.len() {
            offset = 0;
        }
        chunks.push(noise.slice(offset..offset + n));
        offset += n;
        left -= n as u64;
    }
    reqwest::Body::wrap_stream(futures_util::stream::iter(
        chunks.into_iter().map(Ok::<_, std::io::Error>),
    ))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing; there is nothing to list.
    }
    let mb = env_u64("BENCH_UPLOAD_MB", 1024);
    let runs = env_u64("BENCH_RUNS", 3);
    let size = mb * 1024 * 1024;
    let noise = noise();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut speeds = Vec::new();
    let mut rss = Vec::new();
    for run in 0..runs {
        let server = TestServer::start_process(&["--max-upload-bytes", &(size + 1).to_string()]);
        let form = multipart::Form::new()
            .text("task_id", format!("bench-{run}"))
            .part(
                "file",
                multipart::Part::stream_with_length(body(&noise, run, size), size)
                    .file_name("bench.bin"),
            );
        let start = Instant::now();
        let v: serde_json::Value = rt.block_on(async {
            reqwest::Client::new()
                .post(server.url("/data/upload_file"))
                .multipart(form)
                .send()
                .await
                .expect("upload")
                .json()
                .await
                .expect("json")
        });
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(v["code"], 200, "{v}");
        assert_eq!(v["data"]["file_size"], size);
        let mbps = size as f64 / 1e6 / secs;
        let peak = server.peak_rss_mib();
        println!(
            "run {}: {mb} MiB in {secs:.2} s = {mbps:.0} MB/s, server peak RSS {peak:.1} MiB",
            run + 1
        );
        speeds.push(mbps);
        rss.push(peak);
    }
    speeds.sort_by(f64::total_cmp);
    rss.sort_by(f64::total_cmp);
    let median = |v: &[f64]| v[v.len() / 2];
    println!(
        "upload {mb} MiB x{runs}: median {:.0} MB/s (range {:.0}-{:.0}); server peak RSS median {:.1} MiB (max {:.1})",
        median(&speeds),
        speeds[0],
        speeds[speeds.len() - 1],
        median(&rss),
        rss[rss.len() - 1]
    );
}
