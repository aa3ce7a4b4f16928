//! CTI statistics benchmark: count 1,000,000 IP occurrences over 100,000 distinct public
//! addresses, locate every address in a City-layout `.mmdb` and build the four maps and their
//! JSON (what the CTI job does per STIX record, at a far larger size). Prints occurrences/s and
//! peak RSS per run, then the median and range.
//!
//!     cargo bench --bench cti_stats
//!     BENCH_OCCURRENCES=1000000 BENCH_DISTINCT=100000 BENCH_RUNS=5 cargo bench --bench cti_stats

use std::net::Ipv4Addr;
use std::time::Instant;

use br_cti_engine::cti::geo::GeoIp;
use br_cti_engine::cti::stats::{Statistics, count};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().expect(name))
        .unwrap_or(default)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// A deterministic sequence (xorshift64*), so every run measures the same input.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let occurrences = env_num("BENCH_OCCURRENCES", 1_000_000) as usize;
    let distinct = env_num("BENCH_DISTINCT", 100_000) as usize;
    let runs = env_num("BENCH_RUNS", 5) as usize;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // Public addresses only (the first octet avoids private and reserved space), so every one
    // goes to the database.
    let public_octets: Vec<u8> = (1u8..=223)
        .filter(|a| ![10, 100, 127, 169, 172, 192, 198, 203].contains(a))
        .collect();
    let mut ips: Vec<String> = Vec::with_capacity(distinct);
    let mut seen = std::collections::HashSet::new();
    while ips.len() < distinct {
        let r = rng.next();
        let a = public_octets[(r % public_octets.len() as u64) as usize];
        let ip = Ipv4Addr::new(a, (r >> 8) as u8, (r >> 16) as u8, (r >> 24) as u8);
        if seen.insert(ip) {
            ips.push(ip.to_string());
        }
    }
    // Every address occurs at least once; the rest of the occurrences are drawn at random.
    let stream: Vec<&str> = ips
        .iter()
        .map(String::as_str)
        .chain(
            (distinct..occurrences).map(|_| ips[(rng.next() % distinct as u64) as usize].as_str()),
        )
        .collect();

    // A City database with one network per /16 of the addresses (about 40,000 networks, 2,000
    // places): three quarters of the addresses are located, the rest are unknown to it.
    let mut writer = mmdb_writer::Writer::new("Bench-City");
    let mut nets = std::collections::BTreeSet::new();
    for ip in &ips {
        let o: Ipv4Addr = ip.parse().unwrap();
        let [a, b, ..] = o.octets();
        if !(a as u32 * 256 + b as u32).is_multiple_of(4) {
            nets.insert((a, b));
        }
    }
    for (i, (a, b)) in nets.iter().enumerate() {
        let place = i % 2000;
        let record = serde_json::json!({
            "country": {"iso_code": "XX", "names": {"en": format!("Country {}", place % 150)}},
            "subdivisions": [{"names": {"en": format!("Region {}", place % 700)}}],
            "city": {"names": {"en": format!("City {place}")}},
            "location": {"latitude": (place as f64) / 40.0 - 25.0, "longitude": (place as f64) / 20.0 - 50.0},
        });
        writer
            .insert(
                format!("{a}.{b}.0.0/16").parse::<ipnet::IpNet>().unwrap(),
                &record,
            )
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bench.mmdb");
    std::fs::write(&db, writer.to_bytes().unwrap()).unwrap();
    let geo = GeoIp::open(&db).unwrap();
    println!(
        "cti_stats: {occurrences} occurrences over {distinct} addresses, {} networks in the database",
        nets.len()
    );

    let mut times = Vec::new();
    for run in 1..=runs {
        let start = Instant::now();
        let counts = count(stream.iter().copied());
        let stats = Statistics::build(counts, &geo);
        let json = serde_json::to_string(&stats).unwrap();
        let secs = start.elapsed().as_secs_f64();
        let unknown = stats
            .ioc_locations_map
            .get("unknown,unknown,unknown")
            .copied()
            .unwrap_or(0);
        assert_eq!(stats.ioc_ips_map.len(), distinct);
        assert_eq!(stats.ioc_ips_map.values().sum::<u64>(), occurrences as u64);
        println!(
            "run {run}: {secs:.3} s, {:.0} occurrences/s, {} locations, {unknown} occurrences unknown, {:.1} MB of JSON, peak RSS {:.0} MiB",
            occurrences as f64 / secs,
            stats.ioc_locations_map.len(),
            json.len() as f64 / 1e6,
            peak_rss_mib()
        );
        times.push(secs);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "cti_stats: median {:.3} s ({:.0} occurrences/s), range {:.3}-{:.3} s",
        times[times.len() / 2],
        occurrences as f64 / times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
