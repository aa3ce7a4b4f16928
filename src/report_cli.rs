//! `br-cti report`: pushes hidden dangers to another platform that speaks the same interface
//! (platforms report to the level above them), in signed batches, retrying safely: the receiver
//! upserts by (user, riskId), and a retried request is the same signed request, so a batch that
//! was stored but whose answer was lost is answered again without being stored twice.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::Value;
use serde_json::value::RawValue;

use br_cti_app::hidden_danger_auth::sign;

pub(crate) const PATH: &str = "/open/api/v1/retrieval/addHiddenDanger";

#[derive(clap::Args, Debug)]
pub(crate) struct ReportArgs {
    /// The platform to report to: its base URL (`https://cti.example:5000`) or the full
    /// addHiddenDanger URL.
    #[arg(long)]
    pub to: String,
    /// Our user name on that platform.
    #[arg(long)]
    pub user: String,
    /// Our token on that platform (prefer the environment variable: it stays out of shell history).
    #[arg(long, env = "BRCTI_REPORT_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Items per request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Attempts per request when the platform cannot be reached, fails (5xx) or asks to wait (429).
    #[arg(long, default_value_t = 5)]
    pub attempts: u32,
    /// The hidden dangers: a JSON array of items, or an object with `dataValues`.
    pub file: PathBuf,
}

fn endpoint(to: &str) -> String {
    let to = to.trim_end_matches('/');
    if to.ends_with(PATH) {
        to.to_string()
    } else {
        format!("{to}{PATH}")
    }
}

fn load(file: &PathBuf) -> anyhow::Result<Vec<Box<RawValue>>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        #[derive(serde::Deserialize)]
        struct Wrapped {
            #[serde(rename = "dataValues")]
            data_values: Vec<Box<RawValue>>,
        }
        let w: Wrapped = serde_json::from_str(trimmed)
            .with_context(|| format!("{}: expected {{\"dataValues\": [...]}}", file.display()))?;
        Ok(w.data_values)
    } else {
        serde_json::from_str(trimmed)
            .with_context(|| format!("{}: expected a JSON array of items", file.display()))
    }
}

#[derive(Default)]
struct Totals {
    accepted: u64,
    created: u64,
    updated: u64,
    unchanged: u64,
    rejected: u64,
}

pub(crate) fn report_command(args: ReportArgs) -> anyhow::Result<()> {
    br_cti_app::hidden_danger_auth::check_user_name(&args.user).map_err(anyhow::Error::msg)?;
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let items = load(&args.file)?;
    if items.is_empty() {
        bail!("{}: no items", args.file.display());
    }
    let url = endpoint(&args.to);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let mut totals = Totals::default();
    let batches = items.len().div_ceil(args.batch);
    let mut last_ms = 0u128;
    for (b, chunk) in items.chunks(args.batch).enumerate() {
        let offset = b * args.batch;
        // A timestamp of its own for every request (the sign does not cover the body).
        let mut now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis();
        if now <= last_ms {
            now = last_ms + 1;
        }
        last_ms = now;
        let ts = now.to_string();
        let body = format!(
            "{{\"user\":{},\"timestamp\":{ts},\"sign\":\"{}\",\"dataValues\":[{}]}}",
            serde_json::to_string(&args.user)?,
            sign(&ts, &args.user, &args.token),
            chunk.iter().map(|i| i.get()).collect::<Vec<_>>().join(",")
        );
        let answer = send(&client, &url, body, args.attempts)
            .with_context(|| format!("batch {} of {batches} (items {offset}..)", b + 1))?;
        let data = &answer["data"];
        let n = |k: &str| data[k].as_u64().unwrap_or(0);
        if data.get("accepted").is_none() {
            bail!(
                "batch {} of {batches} refused: {} {}",
                b + 1,
                answer["errorCode"].as_str().unwrap_or("?"),
                answer["errorMessage"].as_str().unwrap_or("")
            );
        }
        totals.accepted += n("accepted");
        totals.created += n("created");
        totals.updated += n("updated");
        totals.unchanged += n("unchanged");
        totals.rejected += n("rejected");
        for f in data["failures"].as_array().into_iter().flatten() {
            let index = f["index"].as_u64().unwrap_or(0) as usize + offset;
            eprintln!(
                "item {index} (riskId {}): {} {}",
                f["riskId"],
                f["errorCode"].as_str().unwrap_or("?"),
                f["errorMessage"].as_str().unwrap_or("")
            );
        }
    }
    println!(
        "{}: {} items in {batches} requests to {url}: {} accepted ({} created, {} updated, {} unchanged), {} rejected",
        args.file.display(),
        items.len(),
        totals.accepted,
        totals.created,
        totals.updated,
        totals.unchanged,
        totals.rejected
    );
    if totals.rejected > 0 {
        bail!(
            "{} items were rejected (listed above on standard error)",
            totals.rejected
        );
    }
    Ok(())
}

/// Sends one signed request, retrying the same request on transport errors, 5xx and 429.
fn send(
    client: &reqwest::blocking::Client,
    url: &str,
    body: String,
    attempts: u32,
) -> anyhow::Result<Value> {
    let mut wait = Duration::from_millis(500);
    let mut attempt = 1;
    let mut last_error;
    loop {
        let result = client
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send();
        let retry_in = match result {
            Ok(resp) => {
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = resp.text().unwrap_or_default();
                if status.is_server_error() || status.as_u16() == 429 {
                    last_error = format!("HTTP {status}: {}", text.trim());
                    eprintln!("attempt {attempt}: {last_error}");
                    retry_after.unwrap_or(wait)
                } else {
                    let v: Value = serde_json::from_str(&text).with_context(|| {
                        format!("HTTP {status}: the answer is not JSON: {}", text.trim())
                    })?;
                    return Ok(v);
                }
            }
            Err(e) => {
                last_error = error_chain(&e);
                eprintln!("attempt {attempt}: {last_error}");
                wait
            }
        };
        if attempt >= attempts {
            bail!("gave up after {attempts} attempts; the last: {last_error}");
        }
        std::thread::sleep(retry_in);
        wait = (wait * 2).min(Duration::from_secs(30));
        attempt += 1;
    }
}

/// An error with every cause under it (`error sending request for url (…): client error
/// (Connect): tcp connect error: Connection refused (os error 111)`): reqwest's own message
/// names only the request.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_errors_name_their_cause() {
        // A port nothing listens on: the cause (connection refused) must be in the text.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = reqwest::blocking::Client::new();
        let e = client
            .post(format!("http://127.0.0.1:{port}/"))
            .send()
            .unwrap_err();
        let text = error_chain(&e);
        assert!(text.contains("error sending request"), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }

    #[test]
    fn endpoint_from_base_or_full_url() {
        assert_eq!(
            endpoint("http://a:5000/"),
            "http://a:5000/open/api/v1/retrieval/addHiddenDanger"
        );
        assert_eq!(
            endpoint("http://a:5000/open/api/v1/retrieval/addHiddenDanger"),
            "http://a:5000/open/api/v1/retrieval/addHiddenDanger"
        );
    }
}
