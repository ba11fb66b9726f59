//! Complaints on the admin listener: `POST /v1/complaints` (one), `POST /v1/complaints/import`
//! (`{"complaints": [...]}`, all or nothing), `GET /v1/complaints?account=&since=&limit=`
//! and `GET /v1/complaints/{id}/traceback`. A complaint is answered 201 only once it and
//! what it did are on disk. Bad input is 400 with the field it is about.
use super::Admin;
use crate::screen::complaints::intake::{self, Record};
use crate::screen::complaints::{Complaint, attribution::By};
use crate::state::complaints::{DeskError, Filed};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde_json::{Value, json};
use std::sync::Arc;

/// An import holds at most this many complaints (and its body this many bytes).
pub const MAX_IMPORT: usize = 100_000;
pub const MAX_IMPORT_BYTES: usize = 64 * 1024 * 1024;
/// `GET /v1/complaints` lists at most this many unless `limit` says fewer.
const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 100_000;

fn error(status: StatusCode, msg: impl Into<String>, field: Option<&str>) -> Response {
    let mut body = json!({ "error": msg.into() });
    if let Some(f) = field {
        body["field"] = json!(f);
    }
    (status, Json(body)).into_response()
}

fn off() -> Response {
    error(StatusCode::NOT_FOUND, "complaints are not taken: the configuration has no [complaints] section", None)
}

fn parse_json(body: &[u8]) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}"), Some("body"))))
}

fn bad_field(e: &intake::FieldError) -> Response {
    let mut body = json!({ "error": e.to_string(), "field": e.field });
    if let Some(i) = e.index {
        body["index"] = json!(i);
    }
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

/// The answer for one filed complaint.
fn filed_json(f: &Filed) -> Value {
    let c = &f.complaint;
    json!({
        "id": c.id,
        "attribution": c.attribution,
        "effects": f.effects.describe(),
        "complaint": view(c),
    })
}

/// A complaint as listed: its record with times also in RFC 3339.
fn view(c: &Complaint) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    let t = |s: u64| crate::screen::suspension::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
    v["time_rfc3339"] = json!(t(c.time));
    v["received_rfc3339"] = json!(t(c.received));
    v
}

/// Validate and file `values` together; `prefix(i)` names record i's fields in errors.
async fn file(s: &Arc<Admin>, values: Vec<Value>, import: bool) -> Result<Vec<Filed>, Response> {
    let Some(desk) = s.control.complaints().cloned() else { return Err(off()) };
    let cfg = s.control.config();
    let plan = cfg.screening.as_ref().and_then(|sc| sc.plan.clone());
    let now = s.control.now();
    let mut records: Vec<Record> = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let prefix = if import { format!("complaints[{i}].") } else { String::new() };
        match intake::record(v, plan.as_ref(), now, &prefix) {
            Ok(r) => records.push(r),
            Err(mut e) => {
                e.index = import.then_some(i);
                return Err(bad_field(&e));
            }
        }
    }
    let control = s.control.clone();
    let done = tokio::task::spawn_blocking(move || desk.file(&records, &*control, now).map(|f| (f, desk.counts())));
    match done.await {
        Ok(Ok((filed, counts))) => {
            for f in &filed {
                let c = &f.complaint;
                tracing::info!(
                    id = c.id,
                    account = c.account().unwrap_or("-"),
                    by = ?c.attribution.by,
                    caller = %c.caller,
                    effects = f.effects.listed.len() + f.effects.suspensions.len(),
                    "complaint filed"
                );
            }
            for (account, n) in counts {
                crate::telemetry::metrics::complaints(&account, n);
            }
            Ok(filed)
        }
        Ok(Err(e @ DeskError::Full { .. })) => Err(error(StatusCode::INSUFFICIENT_STORAGE, e.to_string(), None)),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "complaint not filed");
            Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), None))
        }
        Err(e) => {
            tracing::error!(error = %e, "complaint task failed");
            Err(StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
    }
}

/// `POST /v1/complaints`: 201 with the id, the attribution and the effects.
pub async fn add(State(s): State<Arc<Admin>>, body: Bytes) -> Response {
    let v = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    match file(&s, vec![v], false).await {
        Ok(filed) => match filed.first() {
            Some(f) => (StatusCode::CREATED, Json(filed_json(f))).into_response(),
            None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Err(r) => r,
    }
}

/// `POST /v1/complaints/import`: `{"complaints": [...]}`; 201 with every filed complaint,
/// or 400 naming the first bad record's field and index (then none is filed).
pub async fn import(State(s): State<Arc<Admin>>, body: Bytes) -> Response {
    let v = match parse_json(&body) {
        Ok(v) => v,
        Err(r) => return *r,
    };
    let Value::Object(mut o) = v else {
        return error(StatusCode::BAD_REQUEST, "the body must be {\"complaints\": [...]}", Some("body"));
    };
    if let Some(k) = o.keys().find(|k| k.as_str() != "complaints") {
        return error(StatusCode::BAD_REQUEST, format!("unknown field `{k}`"), Some(&k.clone()));
    }
    let Some(Value::Array(list)) = o.remove("complaints") else {
        return error(StatusCode::BAD_REQUEST, "complaints: expected an array", Some("complaints"));
    };
    if list.len() > MAX_IMPORT {
        let msg = format!("complaints: {} records, at most {MAX_IMPORT} per import", list.len());
        return error(StatusCode::PAYLOAD_TOO_LARGE, msg, Some("complaints"));
    }
    match file(&s, list, true).await {
        Ok(filed) => {
            let out: Vec<Value> = filed.iter().map(filed_json).collect();
            (StatusCode::CREATED, Json(json!({ "filed": out.len(), "complaints": out }))).into_response()
        }
        Err(r) => r,
    }
}

/// `GET /v1/complaints?account=ID&since=TIME&limit=N`: oldest first, `since` in RFC 3339 or
/// Unix seconds, on the time received.
pub async fn list(State(s): State<Arc<Admin>>, RawQuery(q): RawQuery) -> Response {
    let Some(desk) = s.control.complaints().cloned() else { return off() };
    let (mut account, mut since, mut limit) = (None, None, DEFAULT_LIMIT);
    for (k, v) in url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        match &*k {
            "account" if !v.is_empty() => account = Some(v.into_owned()),
            "account" => {}
            "since" if v.is_empty() => {}
            "since" => {
                match v.parse::<u64>().ok().or_else(|| intake::parse_time(&v).map(crate::screen::complaints::unix)) {
                    Some(t) => since = Some(t),
                    None => {
                        return error(StatusCode::BAD_REQUEST, format!("since: `{v}` is not a time"), Some("since"));
                    }
                }
            }
            "limit" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => {
                    let msg = format!("limit: `{v}` is not a number from 1 to {MAX_LIMIT}");
                    return error(StatusCode::BAD_REQUEST, msg, Some("limit"));
                }
            },
            other => return error(StatusCode::BAD_REQUEST, format!("unknown parameter `{other}`"), Some(other)),
        }
    }
    let all = desk.list(account.as_deref(), since);
    let total = all.len();
    let shown: Vec<Value> = all.iter().take(limit).map(view).collect();
    Json(json!({ "count": total, "complaints": shown })).into_response()
}

/// `GET /v1/complaints/{id}/traceback`: the decision record of the call the complaint was
/// matched to; 404 when it was attributed without one (by the caller ID's owner, or not).
pub async fn traceback(State(s): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    let Some(desk) = s.control.complaints().cloned() else { return off() };
    let Some(c) = id.trim_start_matches('#').parse::<u64>().ok().and_then(|n| desk.get(n)) else {
        return error(StatusCode::NOT_FOUND, format!("no complaint `{id}`"), None);
    };
    match &c.attribution.call {
        Some(call) => Json(json!({
            "complaint": c.id,
            "by": c.attribution.by,
            "account": c.attribution.account,
            "call": call,
        }))
        .into_response(),
        None => {
            let how = match c.attribution.by {
                By::Owner => "attributed by the caller ID's owner",
                _ => "unattributed",
            };
            let msg = format!("complaint {} matched no forwarded call ({how})", c.id);
            (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": msg, "by": c.attribution.by, "account": c.attribution.account })),
            )
                .into_response()
        }
    }
}
