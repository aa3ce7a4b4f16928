//! The external oracles: OASIS stix2-validator over everything the converter writes, and
//! OASIS python-stix2's identifiers for every observable it emits.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::Value;

/// Converts `input` with the CLI into a fresh folder and returns the JSON Lines files.
fn convert(input: &Path, compress: u32) -> Vec<PathBuf> {
    let out = tempfile::tempdir().unwrap().keep();
    let result = Command::new(BIN)
        .arg("convert")
        .arg(input)
        .args(["--compress", &compress.to_string(), "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let summary = String::from_utf8_lossy(&result.stdout);
    assert!(summary.contains(" 0 rejected"), "{summary}");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Thousands of addresses of every kind, flows with float, integer, text and Chinese columns.
fn varied_dataset() -> PathBuf {
    let mut csv =
        String::from("src,dst,sport,dport,protocol,url,payload,tot_dur,ratio,备注,bytecount\n");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..3000u64 {
        let r = next();
        let src = match i % 4 {
            0 => format!(
                "{}.{}.{}.{}",
                r >> 56,
                (r >> 48) & 255,
                (r >> 40) & 255,
                (r >> 32) & 255
            ),
            1 => format!(
                "2001:db8:{:x}:{:x}::{:x}",
                r >> 48,
                (r >> 32) & 0xffff,
                r & 0xffff
            ),
            2 => format!("host{}.example{}.com", r % 997, i % 13),
            _ => format!(
                "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                r >> 56,
                (r >> 48) & 255,
                (r >> 40) & 255,
                (r >> 32) & 255,
                (r >> 24) & 255,
                (r >> 16) & 255
            ),
        };
        let ratio = (r % 100_000) as f64 / 7.0;
        csv.push_str(&format!(
            "{src},10.{}.{}.{},{},{},{},{},\"{{\"\"q\"\":{}}}\",{}.0,{ratio},\"说明 {i}\",{}\n",
            (r >> 8) & 255,
            (r >> 16) & 255,
            r & 255,
            r % 65536,
            (r >> 20) % 65536,
            ["tcp", "UDP", "icmp", "tcp/http"][(i % 4) as usize],
            if i % 3 == 0 {
                format!("https://site{}.example.org/p?a={}", r % 50, i)
            } else {
                String::new()
            },
            r % 1000,
            45_006_000_000u64 + r % 1000,
            r % 1_000_000,
        ));
    }
    // Both tests call this at once: write aside and rename, so neither reads a half-written file.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join("varied.csv");
    let mut tmp = tempfile::NamedTempFile::new_in(dir).unwrap();
    std::io::Write::write_all(&mut tmp, csv.as_bytes()).unwrap();
    tmp.persist(&path).unwrap();
    path
}

#[test]
fn stix2_validator_accepts_every_file() {
    let datasets = generate(1050, &["csv", "xlsx", "jsonl"]);
    let inputs = [
        sample("honeypot-sample.jsonl"),
        datasets.join("sdn_1050.csv"),
        datasets.join("sdn_1050.xlsx"),
        datasets.join("honeypot_1050.jsonl"),
        varied_dataset(),
    ];
    for input in inputs {
        let files = convert(&input, 100);
        let summary = validate_stix(&files);
        assert_eq!(
            summary["errors"],
            Value::Array(vec![]),
            "{}: {summary}",
            input.display()
        );
        assert!(summary["objects"].as_u64().unwrap() > 0);
        // Warnings only where the data lacks something: 301 is a flow with one port or none
        // (the SDN dataset has no ports).
        for code in summary["warnings"].as_object().unwrap().keys() {
            assert_eq!(
                code,
                "301",
                "{}: unexpected warning {code}: {summary}",
                input.display()
            );
        }
    }
}

#[test]
fn ids_agree_with_python_stix2() {
    let datasets = generate(1050, &["jsonl"]);
    let mut files = convert(&varied_dataset(), 500);
    files.extend(convert(&datasets.join("honeypot_1050.jsonl"), 500));
    let out = Command::new(oracle_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracles/ids.py"))
        .args(&files)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["mismatches"], Value::Array(vec![]), "{report}");
    let checked = &report["checked"];
    for ty in [
        "ipv4-addr",
        "ipv6-addr",
        "domain-name",
        "mac-addr",
        "url",
        "artifact",
        "network-traffic",
    ] {
        assert!(
            checked[ty].as_u64().unwrap_or(0) >= 50,
            "too few {ty} checked: {report}"
        );
    }
    assert!(
        checked["network-traffic"].as_u64().unwrap() >= 3000,
        "{report}"
    );
}
