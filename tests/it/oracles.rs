//! The external oracles: OASIS stix2-validator over everything the converter writes, and
//! OASIS python-stix2's identifiers for every observable it emits.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::{Value, json};

/// Converts `input` with the CLI into a fresh folder and returns the JSON Lines files.
fn convert(input: &Path, compress: u32) -> Vec<PathBuf> {
    convert_with(input, compress, &[])
}

/// Converts with more flags of `br-cti convert`.
fn convert_with(input: &Path, compress: u32, flags: &[&str]) -> Vec<PathBuf> {
    let out = tempfile::tempdir().unwrap().keep();
    let result = Command::new(BIN)
        .arg("convert")
        .arg(input)
        .args(flags)
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
        // Warnings only where the data lacks something, and one by design: 301 is a flow
        // with one port or none (the SDN dataset has no ports); 202 is an indicator's
        // `based-on` relationship to the observable it matches (an address, a domain name),
        // which STIX permits but suggests only for observed-data targets; 302 is an
        // ATT&CK/CAPEC external reference with a URL and no hash of the page (the pages change;
        // MITRE's own STIX carries the same).
        for code in summary["warnings"].as_object().unwrap().keys() {
            assert!(
                ["301", "202", "302"].contains(&code.as_str()),
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
    let report = run_oracle("ids.py", &files);
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

/// Runs `tests/oracles/intel.py` (stix2-patterns, python-stix2 without custom content, the
/// references of relationships and sightings) over STIX files.
fn check_intel(files: &[PathBuf]) -> Value {
    let report = run_oracle("intel.py", files);
    assert_eq!(report["errors"], Value::Array(vec![]), "{report}");
    report
}

fn patterns(report: &Value) -> std::collections::BTreeSet<String> {
    report["indicators"]
        .as_object()
        .unwrap()
        .values()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

fn write_dataset(name: &str, csv: &str) -> PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let path = dir.join(name);
    std::fs::write(&path, csv).unwrap();
    path
}

/// Indicators are made for exactly the public sources the rule selects, one per IOC however
/// it is written, with valid patterns; the same IOC in two datasets is one indicator sighted
/// by both; `--indicators none` makes none.
#[test]
fn indicators_are_valid_and_one_per_ioc() {
    // (source, public?) — each written in rows labelled with an attack and in benign rows.
    let attacking = [
        ("8.8.8.8", true),
        ("1.1.1.1", true),
        ("2606:4700:0:0:0:0:0:1111", true),
        ("2606:4700::1111", true),
        ("Evil-C2.com", true),
        ("203.0.113.5", false),
        ("10.2.3.4", false),
        ("100.64.1.1", false),
        ("172.20.0.1", false),
        ("169.254.3.3", false),
        ("224.0.0.5", false),
        ("fd00::7", false),
        ("2001:db8::9", false),
        ("printer.local", false),
    ];
    let mut csv = String::from("src,dst,protocol,label\n");
    for (i, (src, _)) in attacking.iter().enumerate() {
        csv.push_str(&format!(
            "{src},192.0.2.1,tcp,{}\n",
            ["ddos", "portscan"][i % 2]
        ));
        csv.push_str(&format!("{src},192.0.2.1,tcp,BENIGN\n"));
    }
    // Seen only in benign rows: no indicator in malicious-traffic data.
    csv.push_str("9.9.9.9,192.0.2.1,udp,benign\n");
    let input = write_dataset("traffic.csv", &csv);
    let files = convert_with(&input, 5, &["--type", "1"]);
    let report = check_intel(&files);
    let expected: std::collections::BTreeSet<String> = [
        "[ipv4-addr:value = '8.8.8.8']",
        "[ipv4-addr:value = '1.1.1.1']",
        "[ipv6-addr:value = '2606:4700::1111']",
        "[domain-name:value = 'evil-c2.com']",
    ]
    .iter()
    .map(|p| p.to_string())
    .collect();
    assert_eq!(patterns(&report), expected, "{report}");
    assert_eq!(attacking.iter().filter(|(_, public)| *public).count(), 5);
    // Honeypot data: every source acts; the public 8.8.8.8 is the same indicator.
    let honeypot = write_dataset(
        "honeypot.csv",
        "src,dst,protocol\n8.8.8.8,192.0.2.7,tcp\n5.5.5.5,192.0.2.7,tcp\n192.168.0.3,192.0.2.7,tcp\n",
    );
    let more = convert_with(&honeypot, 100, &["--type", "2"]);
    let both: Vec<PathBuf> = files.iter().chain(more.iter()).cloned().collect();
    let report = check_intel(&both);
    let google = report["indicators"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, p)| p.as_str() == Some("[ipv4-addr:value = '8.8.8.8']"))
        .map(|(id, _)| id.clone())
        .unwrap();
    let sighted_in: Vec<&str> = report["sightings_of"][&google]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        sighted_in
            .iter()
            .any(|p| files.iter().any(|f| f.to_str() == Some(*p)))
            && sighted_in
                .iter()
                .any(|p| more.iter().any(|f| f.to_str() == Some(*p))),
        "{report}"
    );
    assert_eq!(patterns(&report).len(), 5, "{report}");
    // Turned off: no indicator, no relationship.
    let none = check_intel(&convert_with(
        &input,
        5,
        &["--type", "1", "--indicators", "none"],
    ));
    assert!(patterns(&none).is_empty(), "{none}");
    assert!(none["objects"].get("relationship").is_none(), "{none}");
    // The generated honeypot dataset: valid everywhere.
    let datasets = generate(1050, &["jsonl"]);
    let report = check_intel(&convert_with(
        &datasets.join("honeypot_1050.jsonl"),
        100,
        &["--type", "2"],
    ));
    assert!(
        report["objects"]["indicator"].as_u64().unwrap() > 0,
        "{report}"
    );
}

/// misp-stix (the MISP project's converter) imports the bundles without an error and flags
/// for detection (`to_ids`) exactly the values the indicators name; before indicators it
/// flagged none.
#[test]
fn misp_stix_imports_and_flags_the_indicators() {
    let datasets = generate(1050, &["jsonl"]);
    let dir = tempfile::tempdir().unwrap().keep();
    let mut bundles = Vec::new();
    let mut expected = std::collections::BTreeSet::new();
    for (i, input) in [
        sample("honeypot-sample.jsonl"),
        datasets.join("honeypot_1050.jsonl"),
    ]
    .iter()
    .enumerate()
    {
        let bundle = dir.join(format!("b{i}.json"));
        let result = Command::new(BIN)
            .arg("convert")
            .arg(input)
            .args(["--type", "2", "--bundle"])
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(result.status.success(), "{result:?}");
        let v: Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
        for o in v["objects"].as_array().unwrap() {
            if o["type"] == "indicator" {
                let pattern = o["pattern"].as_str().unwrap();
                let value = pattern.split('\'').nth(1).unwrap();
                expected.insert(value.to_string());
            }
        }
        bundles.push(bundle);
    }
    let report = run_oracle("misp.py", &bundles);
    assert_eq!(report["errors"], Value::Array(vec![]), "{report}");
    assert_eq!(report["bundles"], 2);
    // Each bundle's grouping names its event after the dataset (not a bundle id).
    assert_eq!(
        report["events"],
        json!(["honeypot-sample.jsonl", "honeypot_1050.jsonl"]),
        "{report}"
    );
    let flagged: std::collections::BTreeSet<String> = report["to_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(expected.len() >= 10, "{expected:?}");
    assert_eq!(flagged, expected, "{report}");
}
