//! `GET /dnc/<number>?account=ID`: is the number blocked for calls from the account, by the
//! lists and accounts the running proxy has loaded, and by which list and category. The
//! body is `screen::dnc::query::Answer`, which `sipguard dnc check --admin` prints.
use super::Admin;
use crate::control::DncQueryError;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
pub(super) struct DncParams {
    account: Option<String>,
}

/// 200 with the answer; 400 for a number that does not parse, 404 for an unknown account.
pub(super) async fn check(
    State(s): State<Arc<Admin>>,
    Path(number): Path<String>,
    Query(q): Query<DncParams>,
) -> Response {
    match s.control.dnc_query(&number, q.account.as_deref()) {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => {
            let code = match e {
                DncQueryError::BadNumber(_) => StatusCode::BAD_REQUEST,
                DncQueryError::UnknownAccount(_) => StatusCode::NOT_FOUND,
            };
            (code, Json(serde_json::json!({ "error": e.to_string() }))).into_response()
        }
    }
}
