//! `GET /suspensions` (those in force) and `POST /suspensions/{id}/lift` (a caller ID, with
//! or without its `+`, or an account id).
use super::Admin;
use crate::screen::suspension::{Subject, Suspension, rfc3339};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

/// A suspension as the API shows it: times in RFC 3339 and in Unix seconds.
#[derive(Debug, Serialize)]
pub struct View<'a> {
    pub subject: Subject,
    pub id: &'a str,
    pub account: &'a str,
    pub since: String,
    pub until: String,
    pub until_unix: u64,
    pub source: &'a str,
    pub cause: &'a str,
}

impl<'a> From<&'a Suspension> for View<'a> {
    fn from(s: &'a Suspension) -> View<'a> {
        View {
            subject: s.subject,
            id: &s.id,
            account: &s.account,
            since: rfc3339(s.since),
            until: rfc3339(s.until),
            until_unix: s.until.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            source: &s.source,
            cause: &s.cause,
        }
    }
}

pub async fn list(State(s): State<Arc<Admin>>) -> Response {
    let all = s.control.suspensions().list(s.control.now());
    let views: Vec<View> = all.iter().map(View::from).collect();
    Json(serde_json::json!({ "suspensions": views })).into_response()
}

/// 200 with what was lifted; 404 when nothing of that id is in force (nothing recorded).
pub async fn lift(State(s): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    let store = s.control.suspensions().clone();
    let now = s.control.now();
    // `12125550100` names the caller ID `+12125550100` when no account has that id.
    let in_force = |id: &str| store.list(now).iter().any(|x| x.id == id);
    let id =
        if !in_force(&id) && !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) { format!("+{id}") } else { id };
    if !in_force(&id) {
        let body = serde_json::json!({ "error": format!("no suspension of `{id}` in force") });
        return (StatusCode::NOT_FOUND, Json(body)).into_response();
    }
    let lifting = id.clone();
    match tokio::task::spawn_blocking(move || store.lift(&lifting, now)).await {
        Ok(Ok(lifted)) => {
            for l in &lifted {
                tracing::info!(id = %l.id, account = %l.account, source = %l.source, "suspension lifted");
            }
            let views: Vec<View> = lifted.iter().map(View::from).collect();
            Json(serde_json::json!({ "lifted": views })).into_response()
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, %id, "cannot record the lift");
            let body = serde_json::json!({ "error": format!("cannot record the lift: {e}") });
            (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "lift task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
