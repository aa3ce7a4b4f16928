//! The console's hidden dangers, TAXII collections and users.

use std::collections::{BTreeMap, HashMap};

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde_json::Value;

use super::{
    Flash, Session, back, charts, check_change, error_page, json_html, num, page, pager, tr,
    urlencode,
};
use crate::AppState;
use crate::data::blocking;
use crate::envelope::ApiError;
use br_cti_app::users;
use br_cti_domain::vocab::{IssueLevel, JudgeState, NoticeState, Tlp};

const PAGE: u64 = 20;

pub(crate) async fn hidden_dangers(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let lang = session.lang;
    let page_no: u64 = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    // Empty fields of the form mean "any".
    let given: HashMap<String, String> = q
        .iter()
        .filter(|(k, v)| crate::hd_read::FILTERS.contains(&k.as_str()) && !v.trim().is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let query_string: String = crate::hd_read::FILTERS
        .iter()
        .filter_map(|k| given.get(*k).map(|v| format!("{k}={}", urlencode(v))))
        .collect::<Vec<_>>()
        .join("&");
    let (listed, filter_error) = match crate::hd_read::filter(&given) {
        Err(e) => (None, Some(e.message().to_string())),
        Ok(filter) => {
            let st = state.clone();
            let read = blocking("listing hidden dangers", move || {
                let store = |e| crate::data::store_error("listing hidden dangers", e);
                let page = st
                    .meta
                    .hidden_dangers(&filter, Some((page_no, PAGE)))
                    .map_err(store)?;
                let counts = st.meta.hidden_danger_counts(&filter).map_err(store)?;
                Ok((page, counts))
            })
            .await;
            match read {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e.message().to_string())),
            }
        }
    };
    let value = |k: &str| given.get(k).cloned().unwrap_or_default();
    let form = html! {
        form #hd-filter.filters method="get" action="/console/hidden-dangers" {
            div.grid {
                label { (tr(lang, "Platform")) input type="text" name="user" value=(value("user")); }
                label { (tr(lang, "Unit")) input type="text" name="unit_name" value=(value("unit_name")); }
                label { (tr(lang, "Level"))
                    select name="issue_level" {
                        option value="" { (tr(lang, "any")) }
                        @for l in IssueLevel::ALL {
                            option value=(l.number()) selected[value("issue_level") == l.number().to_string()] { (super::i18n::label(lang, l.label())) }
                        }
                    }
                }
                label { (tr(lang, "Verification"))
                    select name="judge_state" {
                        option value="" { (tr(lang, "any")) }
                        @for s in JudgeState::ALL { option value=(s.as_str()) selected[value("judge_state") == s.as_str()] { (s.as_str()) } }
                    }
                }
                label { (tr(lang, "Handling"))
                    select name="notice_state" {
                        option value="" { (tr(lang, "any")) }
                        @for s in NoticeState::ALL { option value=(s.as_str()) selected[value("notice_state") == s.as_str()] { (s.as_str()) } }
                    }
                }
                label { (tr(lang, "Since (RFC 3339 or ms)")) input type="text" name="since" value=(value("since")); }
                label { (tr(lang, "Until (RFC 3339 or ms)")) input type="text" name="until" value=(value("until")); }
                label { (tr(lang, "Address")) input type="text" name="ip" value=(value("ip")); }
            }
            button type="submit" { (tr(lang, "Filter")) }
            " "
            a href="/console/hidden-dangers" { (tr(lang, "Clear")) }
        }
    };
    let zone = &state.config.time_zone;
    let body = html! {
        section.card { (form) }
        @if let Some(((items, total), counts)) = &listed {
            section.card {
                h2 { (tr(lang, "By level and platform")) }
                (charts::stacked_levels(lang, counts))
            }
            section.card {
                h2 { (tr(lang, "Hidden dangers")) " " span.hint #hd-total { "(" (num(*total)) ")" } }
                @if items.is_empty() {
                    p { (tr(lang, "No hidden danger matches.")) }
                } @else {
                    table #hidden-dangers {
                        thead { tr {
                            th { (tr(lang, "Updated")) } th { (tr(lang, "Platform")) } th { (tr(lang, "Unit")) }
                            th { (tr(lang, "Issue")) } th { (tr(lang, "Address")) } th { (tr(lang, "Level")) }
                            th { (tr(lang, "Revision")) }
                        } }
                        tbody {
                            @for hd in items {
                                @let data: Value = serde_json::from_str(&hd.data).unwrap_or(Value::Null);
                                tr {
                                    td { (zone.display_ms(hd.updated_at)) }
                                    td { (hd.user) }
                                    td { (data["unitName"].as_str().unwrap_or("")) }
                                    td { a href=(format!("/console/hidden-dangers/{}/{}", urlencode(&hd.user), urlencode(&hd.risk_id))) { (data["issueName"].as_str().unwrap_or(&hd.risk_id)) } }
                                    td { code { (data["issueIP"].as_str().unwrap_or("")) } }
                                    td { (level_label(lang, &data["issueLevel"])) }
                                    td.num { (hd.revision) }
                                }
                            }
                        }
                    }
                    (pager(lang, &format!("/console/hidden-dangers?{query_string}"), "page", page_no, PAGE, *total))
                }
            }
        }
    };
    let flash = Flash {
        ok: None,
        err: filter_error,
    };
    // A filter that does not parse is answered as a search that found nothing, with the
    // reason (200: the page is the form to correct it).
    (
        StatusCode::OK,
        page(
            &session,
            &format!("/console/hidden-dangers?{query_string}"),
            "/console/hidden-dangers",
            tr(lang, "Hidden dangers"),
            &flash,
            body,
        ),
    )
        .into_response()
}

fn level_label(lang: super::Lang, v: &Value) -> String {
    v.as_u64()
        .and_then(IssueLevel::from_number)
        .map(|l| super::i18n::label(lang, l.label()).to_string())
        .unwrap_or_else(|| v.to_string())
}

pub(crate) async fn hidden_danger(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path((user, risk_id)): Path<(String, String)>,
) -> Response {
    let lang = session.lang;
    let (u, r) = (user.clone(), risk_id.clone());
    let st = state.clone();
    let found = blocking("reading the hidden danger", move || {
        st.meta
            .hidden_danger(&u, &r)
            .map_err(|e| crate::data::store_error("reading the hidden danger", e))
    })
    .await;
    let (hd, revisions) = match found {
        Ok(Some(x)) => x,
        Ok(None) => {
            return error_page(
                &session,
                StatusCode::NOT_FOUND,
                &format!("user {user:?} has reported no hidden danger {risk_id:?}"),
            );
        }
        Err(e) => return error_page(&session, StatusCode::INTERNAL_SERVER_ERROR, e.message()),
    };
    let zone = &state.config.time_zone;
    let item = crate::hd_read::item_json(&hd);
    let no_link = |_: &str| None;
    let raw: Value =
        serde_json::from_str(&hd.raw_event).unwrap_or(Value::String(hd.raw_event.clone()));
    let body = html! {
        section.card {
            dl {
                dt { (tr(lang, "Platform")) } dd { (hd.user) }
                dt { (tr(lang, "Risk id")) } dd { code { (hd.risk_id) } }
                dt { (tr(lang, "Level")) } dd { (level_label(lang, &item["issueLevel"])) }
                dt { (tr(lang, "First reported")) } dd { (zone.display_ms(hd.created_at)) }
                dt { (tr(lang, "Updated")) } dd { (zone.display_ms(hd.updated_at)) }
            }
            pre.json #hd-item { (json_html(&item, &no_link)) }
        }
        section.card {
            h2 { (tr(lang, "Revisions")) " (" (revisions.len()) ")" }
            @for rev in revisions.iter().rev() {
                details open[rev.revision == hd.revision] {
                    summary { (tr(lang, "Revision")) " " (rev.revision) " · " (zone.display_ms(rev.received_at)) }
                    pre.json { (json_html(&serde_json::from_str::<Value>(&rev.data).unwrap_or(Value::Null), &no_link)) }
                }
            }
        }
        section.card {
            h2 { (tr(lang, "Raw event")) }
            pre.json #raw-event { (json_html(&raw, &no_link)) }
        }
    };
    page(
        &session,
        &format!(
            "/console/hidden-dangers/{}/{}",
            urlencode(&user),
            urlencode(&risk_id)
        ),
        "/console/hidden-dangers",
        &hd.risk_id,
        &Flash::default(),
        body,
    )
    .into_response()
}

// ------------------------------------------------------------------------------- TAXII

pub(crate) async fn taxii(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    let lang = session.lang;
    let st = state.clone();
    let read = blocking("reading the TAXII collections", move || {
        let summary = st
            .meta
            .summary(i64::MAX)
            .map_err(|e| crate::data::store_error("reading the TAXII collections", e))?;
        let all = users::list(&*st.meta)?;
        Ok((summary.taxii, all))
    })
    .await;
    let (counts, all) = match read {
        Ok(r) => r,
        Err(e) => return error_page(&session, StatusCode::INTERNAL_SERVER_ERROR, e.message()),
    };
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1:8080");
    // Behind a TLS proxy the browser's scheme is the proxy's (`X-Forwarded-Proto`).
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    let root = format!("{scheme}://{host}/taxii2/api/");
    let by_id: BTreeMap<&str, &br_cti_store::CollectionCount> =
        counts.iter().map(|c| (c.collection.as_str(), c)).collect();
    let body = html! {
        section.card {
            h2 { (tr(lang, "Collections")) }
            p.hint {
                (tr(lang, "API root")) ": " code { (root) } " · "
                @if state.config.taxii_anonymous { (tr(lang, "anonymous readers get TLP:CLEAR objects")) }
                @else { (tr(lang, "readers sign in with a user's token")) }
            }
            table #collections {
                thead { tr {
                    th { (tr(lang, "Collection")) } th { (tr(lang, "Objects")) }
                    th { (tr(lang, "Newest added")) } th { (tr(lang, "Writable")) }
                } }
                tbody {
                    @for c in br_cti_app::taxii::collections() {
                        @let count = by_id.get(c.id.as_str());
                        tr {
                            td { strong { (c.title) } br; code.hint { (c.id) } br; span.hint { (c.description) } }
                            td.num { (num(count.map(|c| c.objects).unwrap_or(0))) }
                            td { (count.map(|c| br_cti_app::taxii::format_us(c.newest_added_us)).unwrap_or_else(|| "—".into())) }
                            td { @if c.writable { (tr(lang, "yes")) } @else { (tr(lang, "no")) } }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { (tr(lang, "Readers and writers")) }
            table #taxii-users.compact {
                thead { tr { th { (tr(lang, "User")) } th { (tr(lang, "Reads up to")) } th { (tr(lang, "May write to")) } } }
                tbody {
                    @for u in &all {
                        tr {
                            td { (u.info.name) }
                            td { (u.info.tlp.name()) }
                            td { @if u.grants.is_empty() { "—" } @else { (u.grants.join(", ")) } }
                        }
                    }
                }
            }
            p { a href="/console/users" { (tr(lang, "Manage users and grants")) } }
        }
        @for c in br_cti_app::taxii::collections() {
            section.card {
                h2 { (tr(lang, "Client snippet")) ": " (c.title) }
                pre.snippet { (snippet(&root, &c.id)) }
            }
        }
    };
    page(
        &session,
        "/console/taxii",
        "/console/taxii",
        "TAXII 2.1",
        &Flash::default(),
        body,
    )
    .into_response()
}

/// Python with taxii2-client: page through a collection.
fn snippet(root: &str, id: &str) -> String {
    format!(
        "from taxii2client.v21 import Collection, as_pages\n\
         \n\
         collection = Collection(\"{root}collections/{id}/\",\n\
         \x20                       user=\"USER\", password=\"TOKEN\")\n\
         for envelope in as_pages(collection.get_objects, per_request=1000):\n\
         \x20   for obj in envelope.get(\"objects\", []):\n\
         \x20       print(obj[\"type\"], obj[\"id\"])\n"
    )
}

// ------------------------------------------------------------------------------- users

#[derive(serde::Deserialize, Default)]
pub(crate) struct UsersQuery {
    ok: Option<String>,
    err: Option<String>,
}

pub(crate) async fn users(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(q): Query<UsersQuery>,
) -> Response {
    users_page(
        state,
        session,
        Flash {
            ok: q.ok,
            err: q.err,
        },
        None,
    )
    .await
}

/// The users page; `token` is a new token to show once (after adding or rotating).
async fn users_page(
    state: AppState,
    session: Session,
    flash: Flash,
    token: Option<(String, String)>,
) -> Response {
    let lang = session.lang;
    let st = state.clone();
    let all = match blocking("listing users", move || Ok(users::list(&*st.meta)?)).await {
        Ok(a) => a,
        Err(e) => return error_page(&session, StatusCode::INTERNAL_SERVER_ERROR, e.message()),
    };
    let zone = &state.config.time_zone;
    let writable: Vec<String> = br_cti_app::taxii::collections()
        .into_iter()
        .filter(|c| c.writable)
        .map(|c| c.id)
        .collect();
    let body = html! {
        @if let Some((name, token)) = &token {
            section.card.token #new-token {
                h2 { (tr(lang, "New token of")) " " (name) }
                p { (tr(lang, "Shown once: copy it now. The node keeps it only to check signs and TAXII sign-ins.")) }
                pre { code #token-value { (token) } }
            }
        }
        section.card {
            h2 { (tr(lang, "Add a user")) }
            form #add-user method="post" action="/console/users" {
                input type="hidden" name="csrf" value=(session.csrf);
                label { (tr(lang, "Name (1-10 characters, not starting with a digit)"))
                    input type="text" name="name" required maxlength="10"; }
                button type="submit" { (tr(lang, "Add")) }
            }
        }
        section.card {
            h2 { (tr(lang, "Users")) }
            @if all.is_empty() { p { (tr(lang, "No users yet.")) } }
            @else {
                table #users {
                    thead { tr {
                        th { (tr(lang, "Name")) } th { (tr(lang, "Created")) } th { (tr(lang, "Token set")) }
                        th { (tr(lang, "Reads up to")) } th { (tr(lang, "Reports marked")) } th { (tr(lang, "May write to")) }
                        th { (tr(lang, "Actions")) }
                    } }
                    tbody {
                        @for u in &all {
                            @let action = format!("/console/users/{}", urlencode(&u.info.name));
                            tr data-user=(u.info.name) {
                                td { strong { (u.info.name) } }
                                td { (zone.display_ms(u.info.created_at)) }
                                td { (zone.display_ms(u.info.rotated_at)) }
                                td {
                                    form.inline method="post" action=(action) {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="op" value="tlp";
                                        select name="tlp" aria-label=(tr(lang, "Reads up to")) {
                                            @for t in Tlp::ALL { option value=(t.as_str()) selected[*t == u.info.tlp] { (t.name()) } }
                                        }
                                        button type="submit" { (tr(lang, "Set")) }
                                    }
                                }
                                td {
                                    form.inline method="post" action=(action) {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="op" value="report_tlp";
                                        select name="tlp" aria-label=(tr(lang, "Reports marked")) {
                                            option value="default" selected[u.report_tlp.is_none()] { (tr(lang, "the node's default")) }
                                            @for t in Tlp::ALL { option value=(t.as_str()) selected[Some(*t) == u.report_tlp] { (t.name()) } }
                                        }
                                        button type="submit" { (tr(lang, "Set")) }
                                    }
                                }
                                td.grants {
                                    @for g in &u.grants {
                                        form.inline method="post" action=(action) {
                                            input type="hidden" name="csrf" value=(session.csrf);
                                            input type="hidden" name="op" value="revoke";
                                            input type="hidden" name="collection" value=(g);
                                            code { (g) } " "
                                            button.link type="submit" { (tr(lang, "Revoke")) }
                                        }
                                    }
                                    form.inline method="post" action=(action) {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="op" value="grant";
                                        select name="collection" aria-label=(tr(lang, "Grant")) {
                                            @for c in &writable { option value=(c) { (c) } }
                                            option value="all" { (tr(lang, "all writable collections")) }
                                        }
                                        button.grant type="submit" { (tr(lang, "Grant")) }
                                    }
                                }
                                td.actions {
                                    form.inline method="post" action=(action) {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="op" value="rotate";
                                        button.rotate type="submit" { (tr(lang, "Rotate token")) }
                                    }
                                    form.inline.confirm method="post" action=(action) data-confirm=(tr(lang, "Remove this user? Its hidden dangers are kept.")) {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="op" value="remove";
                                        button.danger.remove type="submit" { (tr(lang, "Remove")) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(
        &session,
        "/console/users",
        "/console/users",
        tr(lang, "Users"),
        &flash,
        body,
    )
    .into_response()
}

pub(crate) async fn add_user(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| {
        form.get(k)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    if let Err(e) = check_change(&headers, &session, &field("csrf")) {
        return back("/console/users", Err(e));
    }
    let name = field("name");
    let st = state.clone();
    let n = name.clone();
    match blocking("adding the user", move || Ok(users::add(&*st.meta, &n)?)).await {
        Ok(token) => {
            let lang = session.lang;
            let flash = Flash {
                ok: Some(format!("{} {name}", tr(lang, "Added"))),
                err: None,
            };
            users_page(state, session, flash, Some((name, token))).await
        }
        Err(e) => back("/console/users", Err(e.message().to_string())),
    }
}

pub(crate) async fn change_user(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Form(form): axum::Form<HashMap<String, String>>,
) -> Response {
    let lang = session.lang;
    let field = |k: &str| {
        form.get(k)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    if let Err(e) = check_change(&headers, &session, &field("csrf")) {
        return back("/console/users", Err(e));
    }
    let op = field("op");
    let (collection, level) = (field("collection"), field("tlp"));
    let st = state.clone();
    let n = name.clone();
    let o = op.clone();
    let done = blocking("changing the user", move || {
        let db = &*st.meta;
        let parse_tlp = |s: &str| {
            Tlp::from_word_ignoring_case(s).ok_or_else(|| {
                ApiError::bad_request(format!("{s:?} is not a TLP level ({})", Tlp::words()))
            })
        };
        Ok(match o.as_str() {
            "rotate" => Some(users::rotate(db, &n)?),
            "remove" => {
                users::remove(db, &n)?;
                None
            }
            "grant" => {
                users::grant(db, &n, &collection)?;
                None
            }
            "revoke" => {
                users::revoke(db, &n, &collection)?;
                None
            }
            "tlp" => {
                users::set_read_tlp(db, &n, parse_tlp(&level)?)?;
                None
            }
            "report_tlp" => {
                let t = if level == "default" {
                    None
                } else {
                    Some(parse_tlp(&level)?)
                };
                users::set_report_tlp(db, &n, t)?;
                None
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "{other:?} is not a change of a user (rotate, remove, grant, revoke, tlp, report_tlp)"
                )));
            }
        })
    })
    .await;
    match done {
        Ok(Some(token)) => {
            let flash = Flash {
                ok: Some(format!("{} {name}", tr(lang, "New token for"))),
                err: None,
            };
            users_page(state, session, flash, Some((name, token))).await
        }
        Ok(None) => back(
            "/console/users",
            Ok(format!("{}: {name} ({op})", tr(lang, "Done"))),
        ),
        Err(e) => back("/console/users", Err(e.message().to_string())),
    }
}
