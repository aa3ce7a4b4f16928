//! The web console: server-rendered HTML (maud) over the application layer, at `/` and
//! `/console/*`. Every asset is embedded in the binary; the pages need no other host. The
//! access rule is that of `/data/*`: open when the node has no API token (it then listens on
//! loopback only, unless `--insecure`), otherwise a sign-in with the token that sets a signed
//! session cookie. Every change (a POST) carries a CSRF token tied to the session and is
//! refused from another origin.
//!
//! Handlers parse the request, call a use case or a store read, and format; the pages are in
//! `pages.rs` (overview, datasets, STIX, CTI), `admin.rs` (hidden dangers, TAXII, users),
//! the pictures in `charts.rs` and the two languages in `i18n.rs`.

mod admin;
mod charts;
mod i18n;
mod pages;

use std::time::Instant;

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
pub(crate) use i18n::{Lang, tr};

/// What the console keeps for the life of the process.
pub struct ConsoleState {
    /// Signs session cookies and CSRF tokens: derived from the API token (so every node of
    /// one deployment accepts the others' sessions), or random per process without one.
    key: [u8; 32],
    started: Instant,
}

impl ConsoleState {
    pub fn new(api_token: Option<&str>) -> Self {
        let key = match api_token {
            Some(token) => {
                let mut h = Sha256::new();
                h.update(b"br-cti console session key v1\0");
                h.update(token.as_bytes());
                h.finalize().into()
            }
            None => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).expect("the operating system's random source failed");
                key
            }
        };
        ConsoleState {
            key,
            started: Instant::now(),
        }
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        for p in parts {
            m.update(p);
            m.update(b"\0");
        }
        hex::encode(m.finalize().into_bytes())
    }

    pub(crate) fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// How long a sign-in lasts.
const SESSION_SECS: i64 = 12 * 3600;
const SESSION_COOKIE: &str = "brcti_session";
const LANG_COOKIE: &str = "brcti_lang";

/// A request the console accepted: its language and the CSRF token its forms carry.
#[derive(Clone)]
pub(crate) struct Session {
    pub csrf: String,
    pub lang: Lang,
    /// A token is configured (a sign-out button makes sense).
    pub signed_in: bool,
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(crate) fn lang_of(headers: &HeaderMap) -> Lang {
    match cookie(headers, LANG_COOKIE) {
        Some("en") => Lang::En,
        _ => Lang::Zh,
    }
}

fn now_secs() -> i64 {
    br_cti_domain::time::now_ms() / 1000
}

/// The session a request presents, if it is valid (always, without an API token).
fn session_of(state: &AppState, headers: &HeaderMap) -> Option<Session> {
    let lang = lang_of(headers);
    let console = &state.console;
    if state.config.api_token.is_none() {
        return Some(Session {
            csrf: console.mac(&[b"csrf", b"open"]),
            lang,
            signed_in: false,
        });
    }
    let value = cookie(headers, SESSION_COOKIE)?;
    let (expiry, mac) = value.split_once('.')?;
    let expires: i64 = expiry.parse().ok()?;
    if expires <= now_secs() {
        return None;
    }
    let expected = console.mac(&[b"session", expiry.as_bytes()]);
    if !bool::from(expected.as_bytes().ct_eq(mac.as_bytes())) {
        return None;
    }
    Some(Session {
        csrf: console.mac(&[b"csrf", value.as_bytes()]),
        lang,
        signed_in: true,
    })
}

/// A change must come from a page of this node: an `Origin` (or, without one, a `Referer`)
/// naming another host is refused, and so is a missing or wrong CSRF token.
pub(crate) fn check_change(
    headers: &HeaderMap,
    session: &Session,
    presented: &str,
) -> Result<(), String> {
    same_origin(headers)?;
    if presented.is_empty() || !bool::from(presented.as_bytes().ct_eq(session.csrf.as_bytes())) {
        return Err(tr(
            session.lang,
            "The form expired or did not come from this console; reload the page and try again.",
        )
        .to_string());
    }
    Ok(())
}

fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let from = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(from) = from else { return Ok(()) };
    let authority = from
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .unwrap_or("");
    if from == "null" || authority != host {
        return Err(format!(
            "refused: this change came from {from:?}, not from a page of this node ({host})"
        ));
    }
    Ok(())
}

pub(crate) fn router(state: AppState) -> Router<AppState> {
    let guarded = Router::new()
        .route("/console", get(pages::overview))
        .route("/console/", get(pages::overview))
        .route("/console/datasets", get(pages::datasets))
        .route(
            "/console/datasets/upload",
            post(pages::upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/console/datasets/{hash}", get(pages::dataset))
        .route("/console/datasets/{hash}/progress", get(pages::progress))
        .route("/console/datasets/{hash}/convert", post(pages::convert))
        .route("/console/datasets/{hash}/cancel", post(pages::cancel))
        .route("/console/datasets/{hash}/cti", post(pages::build_cti))
        .route("/console/stix/{source}/{stix}", get(pages::stix_file))
        .route(
            "/console/stix/{source}/{stix}/download",
            get(pages::stix_download),
        )
        .route("/console/cti/{source}/{cti}", get(pages::cti_record))
        .route("/console/hidden-dangers", get(admin::hidden_dangers))
        .route(
            "/console/hidden-dangers/{user}/{risk_id}",
            get(admin::hidden_danger),
        )
        .route("/console/taxii", get(admin::taxii))
        .route("/console/users", get(admin::users).post(admin::add_user))
        .route("/console/users/{name}", post(admin::change_user))
        .route("/console/sign-out", post(sign_out))
        .route_layer(middleware::from_fn_with_state(state, guard));
    Router::new()
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/lang", get(set_lang))
        .route("/console/assets/{name}", get(asset))
        .merge(guarded)
}

/// Lets a request with a valid session through (with the session in its extensions);
/// sends a browser without one to the sign-in page.
async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    match session_of(&state, req.headers()) {
        Some(session) => {
            req.extensions_mut().insert(session);
            let mut resp = next.run(req).await;
            secure_headers(resp.headers_mut());
            resp
        }
        None if req.method() == Method::GET => {
            let next_path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            Redirect::to(&format!("/console/sign-in?next={}", urlencode(&next_path)))
                .into_response()
        }
        None => {
            let refusal = (
                StatusCode::UNAUTHORIZED,
                "sign in to the console first (your session ended)",
            )
                .into_response();
            crate::refuse_after_reading(req, refusal).await
        }
    }
}

/// The console's pages load nothing from any other host, and are not framed by one.
fn secure_headers(h: &mut HeaderMap) {
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

pub(crate) fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A path of this node to go back to (never another host).
fn local_path(p: Option<&str>) -> String {
    match p {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.into(),
        _ => "/".into(),
    }
}

// ------------------------------------------------------------------------------ assets

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match name.as_str() {
        "console.css" => (
            include_bytes!("assets/console.css"),
            "text/css; charset=utf-8",
        ),
        "console.js" => (
            include_bytes!("assets/console.js"),
            "text/javascript; charset=utf-8",
        ),
        "world.svg" => (include_bytes!("assets/world.svg"), "image/svg+xml"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------- sign-in

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
    err: Option<String>,
}

async fn sign_in_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<NextQuery>,
) -> Response {
    let lang = lang_of(&headers);
    let next = local_path(q.next.as_deref());
    if state.config.api_token.is_none() {
        // Nothing to sign in to: the console is open (the node listens on loopback).
        return Redirect::to(&next).into_response();
    }
    let body = html! {
        main.narrow {
            h1 { (tr(lang, "Sign in")) }
            p { (tr(lang, "This node has an API token: sign in with it.")) }
            @if let Some(err) = &q.err { p.error role="alert" { (err) } }
            form method="post" action="/console/sign-in" {
                input type="hidden" name="next" value=(next);
                label for="token" { (tr(lang, "API token")) }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { (tr(lang, "Sign in")) }
            }
        }
    };
    let mut resp = bare_page(lang, tr(lang, "Sign in"), body).into_response();
    secure_headers(resp.headers_mut());
    resp
}

#[derive(Deserialize)]
struct SignInForm {
    token: String,
    next: Option<String>,
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<SignInForm>,
) -> Response {
    let lang = lang_of(&headers);
    let next = local_path(form.next.as_deref());
    if let Err(e) = same_origin(&headers) {
        return (StatusCode::FORBIDDEN, e).into_response();
    }
    let Some(expected) = state.config.api_token.as_deref() else {
        return Redirect::to(&next).into_response();
    };
    if !bool::from(form.token.trim().as_bytes().ct_eq(expected.as_bytes())) {
        tracing::warn!("console sign-in with a wrong token");
        return Redirect::to(&format!(
            "/console/sign-in?next={}&err={}",
            urlencode(&next),
            urlencode(tr(lang, "Wrong token."))
        ))
        .into_response();
    }
    let expiry = (now_secs() + SESSION_SECS).to_string();
    let value = format!(
        "{expiry}.{}",
        state.console.mac(&[b"session", expiry.as_bytes()])
    );
    let cookie = format!(
        "{SESSION_COOKIE}={value}; Path=/; Max-Age={SESSION_SECS}; HttpOnly; Secure; SameSite=Strict"
    );
    let mut resp = Redirect::to(&next).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn sign_out(
    headers: HeaderMap,
    axum::Extension(session): axum::Extension<Session>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    if let Err(e) = check_change(&headers, &session, &form.csrf) {
        return (StatusCode::FORBIDDEN, e).into_response();
    }
    let mut resp = Redirect::to("/console/sign-in").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict"
        ))
        .expect("a valid header"),
    );
    resp
}

#[derive(Deserialize)]
struct LangQuery {
    to: String,
    back: Option<String>,
}

/// Switches the language (a cookie of the browser; nothing of the node changes).
async fn set_lang(Query(q): Query<LangQuery>) -> Response {
    let code = if q.to == "en" { "en" } else { "zh" };
    let mut resp = Redirect::to(&local_path(q.back.as_deref())).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{LANG_COOKIE}={code}; Path=/; Max-Age=31536000; SameSite=Lax"
        ))
        .expect("a valid header"),
    );
    resp
}

// ----------------------------------------------------------------------------- layout

fn bare_page(lang: Lang, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · br-cti" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body { (body) }
        }
    }
}

/// The sections of the navigation: path and label.
const NAV: [(&str, &str); 5] = [
    ("/", "Overview"),
    ("/console/datasets", "Datasets"),
    ("/console/hidden-dangers", "Hidden dangers"),
    ("/console/taxii", "TAXII"),
    ("/console/users", "Users"),
];

/// A page of the console: navigation, language switch, sign-out, then `body`. `here` is the
/// path of the page (to come back to after switching language); `flash` a result to show.
pub(crate) fn page(
    session: &Session,
    here: &str,
    section: &str,
    title: &str,
    flash: &Flash,
    body: Markup,
) -> Markup {
    let lang = session.lang;
    let other = match lang {
        Lang::Zh => ("en", "English"),
        Lang::En => ("zh", "中文"),
    };
    bare_page(
        lang,
        title,
        html! {
            header.top {
                a.brand href="/" { "br-cti" }
                nav aria-label=(tr(lang, "Sections")) {
                    @for (path, label) in NAV {
                        a href=(path) aria-current=[(section == path).then_some("page")] { (tr(lang, label)) }
                    }
                }
                div.tools {
                    a #lang-switch href=(format!("/console/lang?to={}&back={}", other.0, urlencode(here))) lang=(other.0) { (other.1) }
                    @if session.signed_in {
                        form.inline method="post" action="/console/sign-out" {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button.link type="submit" { (tr(lang, "Sign out")) }
                        }
                    }
                }
            }
            main data-csrf=(session.csrf) {
                h1 { (title) }
                @if let Some(ok) = &flash.ok { p.ok role="status" { (ok) } }
                @if let Some(err) = &flash.err { p.error role="alert" { (err) } }
                (body)
            }
            footer { "br-cti " (env!("CARGO_PKG_VERSION")) }
        },
    )
}

/// The result of a change, carried to the page the browser is sent back to.
#[derive(Default, Deserialize)]
pub(crate) struct Flash {
    pub ok: Option<String>,
    pub err: Option<String>,
}

/// Back to `path` with a message (`Ok`: done; `Err`: why not, as the API words it).
pub(crate) fn back(path: &str, outcome: Result<String, String>) -> Response {
    let (k, v) = match outcome {
        Ok(m) => ("ok", m),
        Err(m) => ("err", m),
    };
    let v: String = v.chars().take(600).collect();
    let (path, fragment) = match path.split_once('#') {
        Some((p, f)) => (p, format!("#{f}")),
        None => (path, String::new()),
    };
    let sep = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{sep}{k}={}{fragment}", urlencode(&v))).into_response()
}

/// An error page (a page or record that does not exist, a read that failed).
pub(crate) fn error_page(session: &Session, status: StatusCode, message: &str) -> Response {
    let lang = session.lang;
    let body = html! {
        p.error role="alert" { (message) }
        p { a href="/" { (tr(lang, "Back to the overview")) } }
    };
    (
        status,
        page(
            session,
            "/",
            "",
            tr(lang, "Something went wrong"),
            &Flash::default(),
            body,
        ),
    )
        .into_response()
}

/// Bytes for people: `1.5 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A whole number with thousands separators: `1,234,567`.
pub(crate) fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds for people: `3 h 5 min`, `42 s`.
pub(crate) fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        s => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Previous/next links of a paged list (`page` from 1).
pub(crate) fn pager(
    lang: Lang,
    base: &str,
    param: &str,
    page: u64,
    size: u64,
    total: u64,
) -> Markup {
    let pages = total.div_ceil(size).max(1);
    let link = |p: u64| {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}{param}={p}")
    };
    html! {
        nav.pager aria-label=(tr(lang, "Pages")) {
            @if page > 1 { a rel="prev" href=(link(page - 1)) { "‹ " (tr(lang, "Previous")) } }
            span { (tr(lang, "Page")) " " (page) " / " (pages) " · " (num(total)) " " (tr(lang, "in all")) }
            @if page < pages { a rel="next" href=(link(page + 1)) { (tr(lang, "Next")) " ›" } }
        }
    }
}

/// A JSON value pretty-printed as HTML; strings that are ids in `known` link to them.
pub(crate) fn json_html(v: &serde_json::Value, link: &dyn Fn(&str) -> Option<String>) -> Markup {
    let mut out = String::new();
    write_json(v, 0, link, &mut out);
    PreEscaped(out)
}

fn write_json(
    v: &serde_json::Value,
    indent: usize,
    link: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
) {
    use serde_json::Value;
    let pad = |n: usize, out: &mut String| out.extend(std::iter::repeat_n("  ", n));
    match v {
        Value::Object(map) if map.is_empty() => out.push_str("{}"),
        Value::Object(map) => {
            out.push_str("{\n");
            for (i, (k, v)) in map.iter().enumerate() {
                pad(indent + 1, out);
                out.push_str("<span class=\"k\">");
                out.push_str(&escape(&serde_json::to_string(k).unwrap_or_default()));
                out.push_str("</span>: ");
                write_json(v, indent + 1, link, out);
                if i + 1 < map.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            pad(indent, out);
            out.push('}');
        }
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            out.push_str("[\n");
            for (i, v) in items.iter().enumerate() {
                pad(indent + 1, out);
                write_json(v, indent + 1, link, out);
                if i + 1 < items.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            pad(indent, out);
            out.push(']');
        }
        Value::String(s) => {
            let text = escape(&serde_json::to_string(s).unwrap_or_default());
            match link(s) {
                Some(href) => {
                    out.push_str("<a class=\"ref\" href=\"");
                    out.push_str(&escape(&href));
                    out.push_str("\">");
                    out.push_str(&text);
                    out.push_str("</a>");
                }
                None => {
                    out.push_str("<span class=\"s\">");
                    out.push_str(&text);
                    out.push_str("</span>");
                }
            }
        }
        other => out.push_str(&escape(&other.to_string())),
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Whether a browser asked for a page (the old front ends' connection check asks for JSON).
pub(crate) fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

/// `GET /` from a browser: the overview (or the sign-in page).
pub(crate) async fn root_page(State(state): State<AppState>, req: Request) -> Response {
    match session_of(&state, req.headers()) {
        Some(session) => {
            let mut resp = pages::overview_for(state, session).await;
            secure_headers(resp.headers_mut());
            resp
        }
        None => Redirect::to("/console/sign-in?next=/").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_sizes_read_well() {
        assert_eq!(num(0), "0");
        assert_eq!(num(1234), "1,234");
        assert_eq!(num(1_234_567), "1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(3_900), "1 h 5 min");
    }

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path(Some("/console/users")), "/console/users");
        assert_eq!(local_path(Some("//evil.example/x")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn changes_from_other_origins_or_without_the_token_are_refused() {
        let s = Session {
            csrf: "abc".into(),
            lang: Lang::En,
            signed_in: true,
        };
        let here = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(check_change(&here, &s, "abc").is_ok());
        assert!(check_change(&here, &s, "abd").is_err());
        assert!(check_change(&here, &s, "").is_err());
        let elsewhere = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert!(check_change(&elsewhere, &s, "abc").is_err());
        let null = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(check_change(&null, &s, "abc").is_err());
        let referer = headers(&[
            ("host", "127.0.0.1:8080"),
            ("referer", "http://evil.example/page"),
        ]);
        assert!(check_change(&referer, &s, "abc").is_err());
    }

    #[test]
    fn json_is_escaped_and_ids_link() {
        let v = serde_json::json!({"a": "<script>", "ref": "x--1", "n": [1, true]});
        let html = json_html(&v, &|s| (s == "x--1").then(|| "#x--1".to_string())).0;
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("<a class=\"ref\" href=\"#x--1\">"), "{html}");
    }
}
