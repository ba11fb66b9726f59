//! Admin HTTP listener (`[admin] listen`): `GET /metrics` (Prometheus text), `GET /health`,
//! `POST /reload` (the same reload as SIGHUP), `GET /accounts/{id}`,
//! `GET /accounts/{id}/caller-ids` (`caller_ids.rs`), `GET /security/bans`,
//! `GET /suspensions`, `POST /suspensions/{id}/lift`, `GET /dnc/{number}?account=ID`
//! (`dnc.rs`), and the decision API `POST /v1/screen`, `POST /v1/screen/batch`,
//! `GET /v1/openapi.json` (`screen_api.rs`), and complaints: `POST /v1/complaints`,
//! `POST /v1/complaints/import`, `GET /v1/complaints`, `GET /v1/complaints/{id}/traceback`
//! (`complaints.rs`).
//!
//! With `[admin] token` set, every endpoint, /health included, needs
//! `Authorization: Bearer <token>` (probes can send a header; /health names files and
//! accounts). Without a token the config only allows a loopback address.

mod caller_ids;
pub mod complaints;
mod dnc;
pub mod screen_api;
pub mod suspensions;

use crate::control::Control;
use crate::telemetry::metrics as m;
use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// How often histograms are compacted when nobody scrapes, so memory stays bounded.
const UPKEEP: Duration = Duration::from_secs(5);

/// Install the Prometheus recorder as the process's metrics recorder and register the
/// per-message handles with it. Once per process.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("sipguard_screen_seconds".into()), &m::SCREEN_SECONDS_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full("sipguard_cluster_reserve_seconds".into()), &m::SCREEN_SECONDS_BUCKETS)?
        .install_recorder()?;
    m::register();
    Ok(handle)
}

pub struct Admin {
    pub(crate) control: Arc<Control>,
    metrics: PrometheusHandle,
    token: Option<Arc<str>>,
}

/// Serve the admin API on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    control: Arc<Control>,
    metrics: PrometheusHandle,
    token: Option<String>,
    mut stop: watch::Receiver<bool>,
) {
    let upkeep = {
        let h = metrics.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP);
            loop {
                tick.tick().await;
                h.run_upkeep();
            }
        })
    };
    let state = Arc::new(Admin { control, metrics, token: token.map(Arc::from) });
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .route("/reload", post(reload))
        .route("/accounts/{id}", get(account))
        .route("/accounts/{id}/caller-ids", get(caller_ids::list))
        .route("/security/bans", get(bans))
        .route("/suspensions", get(suspensions::list))
        .route("/suspensions/{id}/lift", post(suspensions::lift))
        .route("/dnc/{number}", get(dnc::check))
        .route("/v1/screen", post(screen_api::screen))
        .route("/v1/screen/batch", post(screen_api::batch))
        .route("/v1/openapi.json", get(screen_api::openapi_json))
        .route("/v1/complaints", post(complaints::add).get(complaints::list))
        .route(
            "/v1/complaints/import",
            post(complaints::import).layer(axum::extract::DefaultBodyLimit::max(complaints::MAX_IMPORT_BYTES)),
        )
        .route("/v1/complaints/{id}/traceback", get(complaints::traceback))
        .layer(axum::extract::DefaultBodyLimit::max(screen_api::MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
        tracing::error!(error = %e, "admin listener failed");
    }
    upkeep.abort();
}

async fn authorize(State(s): State<Arc<Admin>>, req: Request, next: Next) -> Response {
    let Some(token) = &s.token else {
        return next.run(req).await;
    };
    let given =
        req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|g| same(g.trim().as_bytes(), token.as_bytes())) {
        next.run(req).await
    } else {
        (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], "missing or wrong bearer token\n")
            .into_response()
    }
}

/// Equality whose time does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics_text(State(s): State<Arc<Admin>>) -> Response {
    s.control.export_behaviour();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], s.metrics.render()).into_response()
}

async fn health(State(s): State<Arc<Admin>>) -> Response {
    Json(s.control.health()).into_response()
}

/// 200 with the new status when applied, 422 with the reasons when refused.
async fn reload(State(s): State<Arc<Admin>>) -> Response {
    let control = s.control.clone();
    match tokio::task::spawn_blocking(move || control.reload()).await {
        Ok(status) if status.result == "ok" => Json(status).into_response(),
        Ok(status) => (StatusCode::UNPROCESSABLE_ENTITY, Json(status)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "reload task failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// The bans in force: `{"bans": [{source, since, until, dropped}]}`.
async fn bans(State(s): State<Arc<Admin>>) -> Response {
    axum::Json(serde_json::json!({ "bans": s.control.bans() })).into_response()
}

async fn account(State(s): State<Arc<Admin>>, Path(id): Path<String>) -> Response {
    match s.control.account_everywhere(&id).await {
        Some(a) => Json(a).into_response(),
        None => {
            (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": format!("no account `{id}`") }))).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn token_comparison() {
        assert!(same(b"s3cret", b"s3cret"));
        assert!(!same(b"s3cret", b"s3cres"));
        assert!(!same(b"s3cret", b"s3cret2"));
        assert!(!same(b"", b"x"));
    }
}
