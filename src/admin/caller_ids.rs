//! `GET /accounts/<id>/caller-ids[?limit=N]`: the call behaviour figures of each caller ID
//! the account called from in its window, most attempts first (at most `limit`, default
//! `DEFAULT_LIMIT`, at most `MAX_LIMIT`).
use super::Admin;
use crate::screen::behaviour::Figures;
use crate::screen::suspension::Suspension;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 10_000;

#[derive(Debug, Deserialize)]
pub(super) struct Params {
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Row {
    caller_id: String,
    #[serde(flatten)]
    figures: Figures,
}

/// 200 `{"account", "caller_ids": [{"caller_id", figures...}]}`; 404 when the account is
/// unknown or its behaviour is not tracked.
pub(super) async fn list(State(s): State<Arc<Admin>>, Path(id): Path<String>, Query(q): Query<Params>) -> Response {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
    match s.control.caller_figures(&id, limit) {
        Some(rows) => {
            let rows: Vec<Row> =
                rows.into_iter().map(|(n, figures)| Row { caller_id: Suspension::caller_id(n), figures }).collect();
            Json(serde_json::json!({ "account": id, "caller_ids": rows })).into_response()
        }
        None => {
            let body = serde_json::json!({ "error": format!("no account `{id}` with call behaviour tracked") });
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
    }
}
