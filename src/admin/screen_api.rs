//! The HTTP decision API: `POST /v1/screen`, `POST /v1/screen/batch` and the OpenAPI
//! document `GET /v1/openapi.json`, on the admin listener (same bearer token).
//!
//! A switch that stays in the call path (Kamailio `http_client`, FreeSWITCH `curl`, an
//! SBC) asks before it routes a call. Screening is the proxy's own engine: the same
//! counters (a call the API passes is charged, unless `dry_run`), the same metrics and the
//! same decision log. Bodies are read strictly: bad JSON, a body that is not an object, a
//! missing or mistyped field or an unknown one is a 400 that names the field.

use super::Admin;
use crate::engine::{CallFacts, Engine};
use crate::proxy::Decided;
use crate::screen::{Decision, Verdict};
use crate::telemetry::metrics as m;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Calls in one batch, at most.
pub const MAX_BATCH: usize = 1000;
/// Longest text field; an Identity header with a few PASSporTs stays well under it.
pub const MAX_FIELD_BYTES: usize = 16 * 1024;
/// Largest request body (a full batch of long calls).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The routes this file serves, for the router and the OpenAPI test.
pub const PATHS: [(&str, &str); 3] =
    [("post", "/v1/screen"), ("post", "/v1/screen/batch"), ("get", "/v1/openapi.json")];

/// The fields of a call, and whether each is required.
const FIELDS: [(&str, bool); 8] = [
    ("account", false),
    ("source_ip", true),
    ("caller", true),
    ("callee", true),
    ("p_asserted_identity", false),
    ("identity", false),
    ("call_id", true),
    ("dry_run", false),
];

/// A request error: 400 (or 413) with the message and the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadRequest {
    #[serde(skip)]
    pub status: u16,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl BadRequest {
    fn new(error: impl Into<String>, field: Option<String>) -> BadRequest {
        BadRequest { status: 400, error: error.into(), field }
    }
}

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, Json(self)).into_response()
    }
}

/// One screening answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    /// `forward`, `reject`, or `would_reject` (report mode: forward, but a rule fired).
    pub verdict: &'static str,
    pub rule: Option<&'static str>,
    /// The SIP response to refuse the call with (`reject` only).
    pub code: Option<u16>,
    pub reason: Option<String>,
    /// Headers to put on the reject response (Reason, Retry-After, Call-Info) or, for a
    /// call to place, on the INVITE sent on (X-Sipguard-Verdict, -Account, -Verstat).
    pub headers: BTreeMap<String, String>,
    pub account: Option<String>,
    /// The STIR verstat to tag the caller's identity with, when `[stir]` verified it.
    pub verstat: Option<&'static str>,
    /// The DNC list that matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub list: Option<String>,
    pub dry_run: bool,
}

impl Answer {
    pub fn of(d: &Decision, dry_run: bool) -> Answer {
        let verstat = match &*d.verdict {
            Verdict::Forward { verstat: Some(v), .. } => Some(v.as_str()),
            _ => d.stir.as_ref().map(|r| r.outcome.verstat().as_str()),
        };
        let (verdict, code, reason, headers) = match &*d.verdict {
            Verdict::Reject { code, reason, headers } => (
                "reject",
                Some(*code),
                Some(reason.clone()),
                headers.iter().map(|h| (h.name.to_string(), h.value.clone())).collect(),
            ),
            Verdict::Forward { headers, .. } => {
                let mut hs: BTreeMap<String, String> =
                    crate::proxy::redirect::verdict_headers(d).into_iter().map(|(n, v)| (n.to_string(), v)).collect();
                hs.extend(headers.iter().map(|h| (h.name.to_string(), h.value.clone())));
                (if d.would_reject { "would_reject" } else { "forward" }, None, None, hs)
            }
        };
        Answer {
            verdict,
            rule: d.rule.map(|r| r.name()),
            code,
            reason,
            headers,
            account: d.account.as_deref().map(str::to_string),
            verstat,
            list: d.list.as_deref().map(str::to_string),
            dry_run,
        }
    }
}

/// Parse the body as a JSON object.
fn object(body: &[u8]) -> Result<Map<String, Value>, BadRequest> {
    let v: Value = serde_json::from_slice(body).map_err(|e| BadRequest::new(format!("malformed JSON: {e}"), None))?;
    match v {
        Value::Object(o) => Ok(o),
        other => Err(BadRequest::new(format!("the body must be a JSON object, not {}", kind(&other)), None)),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One call from its JSON object; `at` prefixes field names (`calls[3].`). Returns the
/// facts and the call's own `dry_run`, if given.
pub fn parse_call(o: &Map<String, Value>, at: &str) -> Result<(CallFacts, Option<bool>), BadRequest> {
    let name = |f: &str| format!("{at}{f}");
    if let Some(k) = o.keys().find(|k| !FIELDS.iter().any(|(f, _)| f == k)) {
        let known: Vec<&str> = FIELDS.iter().map(|(f, _)| *f).collect();
        return Err(BadRequest::new(
            format!("unknown field `{}` (fields: {})", name(k), known.join(", ")),
            Some(name(k)),
        ));
    }
    let text = |f: &str| -> Result<Option<String>, BadRequest> {
        let required = FIELDS.iter().any(|(n, r)| *n == f && *r);
        match o.get(f) {
            None | Some(Value::Null) if required => {
                Err(BadRequest::new(format!("`{}` is required", name(f)), Some(name(f))))
            }
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() > MAX_FIELD_BYTES => {
                Err(BadRequest::new(format!("`{}` is longer than {MAX_FIELD_BYTES} bytes", name(f)), Some(name(f))))
            }
            Some(Value::String(s)) if s.chars().any(|c| c.is_control()) => {
                Err(BadRequest::new(format!("`{}` contains control characters", name(f)), Some(name(f))))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => {
                Err(BadRequest::new(format!("`{}` must be a string, not {}", name(f), kind(other)), Some(name(f))))
            }
        }
    };
    let source = text("source_ip")?.unwrap_or_default();
    let source_ip = source.trim().parse().map_err(|_| {
        BadRequest::new(format!("`{}` = \"{source}\" is not an IP address", name("source_ip")), Some(name("source_ip")))
    })?;
    let dry_run = match o.get("dry_run") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            return Err(BadRequest::new(
                format!("`{}` must be a boolean, not {}", name("dry_run"), kind(other)),
                Some(name("dry_run")),
            ));
        }
    };
    let facts = CallFacts {
        account: text("account")?,
        source_ip,
        caller: text("caller")?.unwrap_or_default(),
        callee: text("callee")?.unwrap_or_default(),
        p_asserted_identity: text("p_asserted_identity")?,
        identity: text("identity")?,
        call_id: text("call_id")?.unwrap_or_default(),
    };
    Ok((facts, dry_run))
}

/// Screen one call with the running proxy's engine: charged unless `dry_run`, counted in
/// the metrics and written to the decision log like a call through the proxy (a dry run
/// is neither).
fn screen_one(admin: &Admin, facts: &CallFacts, dry_run: bool) -> Result<Answer, BadRequest> {
    let shell = admin.control.shell();
    let _gate = shell.gate.read().unwrap_or_else(|e| e.into_inner());
    if shell.stopped.load(Ordering::Relaxed) {
        return Err(BadRequest { status: 503, error: "shutting down".into(), field: None });
    }
    let engine = Engine::from_screen(shell.proxy.screen());
    let now = admin.control.now();
    if dry_run {
        return Ok(Answer::of(&engine.dry_run(facts, now), true));
    }
    let started = Instant::now();
    let d = engine.screen(facts, now);
    let label = match (&*d.verdict, d.would_reject) {
        (Verdict::Reject { .. }, _) => "reject",
        (Verdict::Forward { .. }, true) => "would_reject",
        (Verdict::Forward { .. }, false) => "forward",
    };
    m::verdict(
        label,
        d.rule.map_or("-", |r| r.name()),
        d.account.as_deref().unwrap_or("-"),
        started.elapsed().as_secs_f64(),
    );
    if let Some(r) = &d.stir {
        m::stir(r.outcome.label(), r.attestation.map_or("-", |a| a.as_str()));
    }
    let answer = Answer::of(&d, false);
    if let Some(sink) = &shell.decisions {
        sink.record(&Decided { time: now, call_id: facts.call_id.clone(), decision: d });
    }
    Ok(answer)
}

/// `POST /v1/screen`: one call.
pub async fn screen(State(s): State<Arc<Admin>>, body: Bytes) -> Response {
    let answer = object(&body)
        .and_then(|o| parse_call(&o, ""))
        .and_then(|(facts, dry_run)| screen_one(&s, &facts, dry_run.unwrap_or(false)));
    match answer {
        Ok(a) => Json(a).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /v1/screen/batch`: `{"calls": [...], "dry_run"?: bool}`, at most `MAX_BATCH`
/// calls, answered in order. Every call is read before any is screened, so a bad one
/// screens (and charges) nothing.
pub async fn batch(State(s): State<Arc<Admin>>, body: Bytes) -> Response {
    match run_batch(&s, &body) {
        Ok(results) => Json(json!({ "results": results })).into_response(),
        Err(e) => e.into_response(),
    }
}

fn run_batch(s: &Admin, body: &[u8]) -> Result<Vec<Answer>, BadRequest> {
    let o = object(body)?;
    if let Some(k) = o.keys().find(|k| !matches!(k.as_str(), "calls" | "dry_run")) {
        return Err(BadRequest::new(format!("unknown field `{k}` (fields: calls, dry_run)"), Some(k.clone())));
    }
    let all_dry = match o.get("dry_run") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(BadRequest::new(
                format!("`dry_run` must be a boolean, not {}", kind(other)),
                Some("dry_run".into()),
            ));
        }
    };
    let calls = match o.get("calls") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Err(BadRequest::new("`calls` is required", Some("calls".into()))),
        Some(other) => {
            return Err(BadRequest::new(
                format!("`calls` must be an array, not {}", kind(other)),
                Some("calls".into()),
            ));
        }
    };
    if calls.len() > MAX_BATCH {
        return Err(BadRequest {
            status: 413,
            error: format!("{} calls: a batch holds at most {MAX_BATCH}", calls.len()),
            field: Some("calls".into()),
        });
    }
    let mut parsed = Vec::with_capacity(calls.len());
    for (i, c) in calls.iter().enumerate() {
        let at = format!("calls[{i}].");
        let Value::Object(o) = c else {
            return Err(BadRequest::new(
                format!("`calls[{i}]` must be an object, not {}", kind(c)),
                Some(format!("calls[{i}]")),
            ));
        };
        let (facts, dry) = parse_call(o, &at)?;
        parsed.push((facts, all_dry || dry.unwrap_or(false)));
    }
    parsed.iter().map(|(f, dry)| screen_one(s, f, *dry)).collect()
}

/// `GET /v1/openapi.json`.
pub async fn openapi_json() -> Response {
    Json(openapi()).into_response()
}

/// The OpenAPI 3.0 description of this file's routes; `tests/screen_api.rs` checks it
/// against the running implementation (every path, every example, every schema).
pub fn openapi() -> Value {
    let call_props = json!({
        "account": {"type": "string", "nullable": true, "description": "The account; when absent it is found from source_ip (an account's sources)."},
        "source_ip": {"type": "string", "description": "The customer's address the call came from (IPv4 or IPv6)."},
        "caller": {"type": "string", "description": "Caller ID: a number (+12125550100) or a From value/URI."},
        "callee": {"type": "string", "description": "Number called: a number or a Request-URI."},
        "p_asserted_identity": {"type": "string", "nullable": true},
        "identity": {"type": "string", "nullable": true, "description": "Identity header value(s) (STIR/SHAKEN)."},
        "call_id": {"type": "string"},
        "dry_run": {"type": "boolean", "nullable": true, "description": "Screen without charging quotas, logging or counting."}
    });
    let example = json!({
        "account": "acct0001", "source_ip": "127.0.0.1", "caller": "+12125550100",
        "callee": "+13125550199", "call_id": "a84b4c76e66710@pbx", "dry_run": true
    });
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "sipguard decision API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Screen calls with the running sipguard's policy, counters and decision log. With [admin] token set every request needs Authorization: Bearer <token>."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Call": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["source_ip", "caller", "callee", "call_id"],
                    "properties": call_props
                },
                "Batch": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["calls"],
                    "properties": {
                        "calls": {"type": "array", "maxItems": MAX_BATCH, "items": {"$ref": "#/components/schemas/Call"}},
                        "dry_run": {"type": "boolean", "nullable": true}
                    }
                },
                "Answer": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["verdict", "rule", "code", "reason", "headers", "account", "verstat", "dry_run"],
                    "properties": {
                        "verdict": {"type": "string", "enum": ["forward", "reject", "would_reject"]},
                        "rule": {"type": "string", "nullable": true, "description": "The rule that fired (rejected, or would have in report mode)."},
                        "code": {"type": "integer", "nullable": true, "description": "SIP status to refuse the call with (reject)."},
                        "reason": {"type": "string", "nullable": true},
                        "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Headers for the reject response, or for the INVITE sent on (X-Sipguard-Verdict, X-Sipguard-Account, X-Sipguard-Verstat)."},
                        "account": {"type": "string", "nullable": true},
                        "verstat": {"type": "string", "nullable": true},
                        "list": {"type": "string", "description": "The do-not-call list that matched."},
                        "dry_run": {"type": "boolean"}
                    }
                },
                "BatchAnswer": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["results"],
                    "properties": {"results": {"type": "array", "items": {"$ref": "#/components/schemas/Answer"}}}
                },
                "Error": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string"},
                        "field": {"type": "string", "description": "The field at fault, e.g. caller or calls[3].source_ip."}
                    }
                }
            }
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/screen": {"post": {
                "summary": "Screen one call",
                "requestBody": {"required": true, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Call"}, "example": example}}},
                "responses": {
                    "200": {"description": "The decision", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Answer"}}}},
                    "400": {"description": "Malformed JSON, not an object, or a bad field (named)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                    "401": {"description": "Missing or wrong bearer token"}
                }
            }},
            "/v1/screen/batch": {"post": {
                "summary": "Screen up to 1000 calls, answered in order",
                "requestBody": {"required": true, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Batch"}, "example": {"calls": [example, example], "dry_run": true}}}},
                "responses": {
                    "200": {"description": "One decision per call", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchAnswer"}}}},
                    "400": {"description": "Malformed JSON or a bad field (named); nothing is screened", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                    "401": {"description": "Missing or wrong bearer token"},
                    "413": {"description": "More than 1000 calls", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                }
            }},
            "/v1/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.0", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(v: Value) -> Result<(CallFacts, Option<bool>), BadRequest> {
        let Value::Object(o) = v else { panic!("not an object") };
        parse_call(&o, "")
    }

    #[test]
    fn fields_are_checked_by_name() {
        let ok = json!({"source_ip": "192.0.2.1", "caller": "+1", "callee": "+2", "call_id": "c", "dry_run": true});
        let (f, dry) = call(ok.clone()).unwrap();
        assert_eq!((f.source_ip.to_string(), dry), ("192.0.2.1".to_string(), Some(true)));
        let field = |v: Value| call(v).unwrap_err().field;
        let mut v = ok.clone();
        v["caller"] = json!(5);
        assert_eq!(field(v), Some("caller".into()));
        let mut v = ok.clone();
        v.as_object_mut().unwrap().remove("call_id");
        assert_eq!(field(v), Some("call_id".into()));
        let mut v = ok.clone();
        v["source_ip"] = json!("not-an-ip");
        assert_eq!(field(v), Some("source_ip".into()));
        let mut v = ok.clone();
        v["dry_run"] = json!("yes");
        assert_eq!(field(v), Some("dry_run".into()));
        let mut v = ok.clone();
        v["calee"] = json!("+2");
        assert_eq!(field(v), Some("calee".into()));
        let mut v = ok.clone();
        v["identity"] = json!("x".repeat(MAX_FIELD_BYTES + 1));
        assert_eq!(field(v), Some("identity".into()));
        let mut v = ok;
        v["caller"] = json!("+1\r\nX: y");
        assert_eq!(field(v), Some("caller".into()));
        assert!(object(b"{").unwrap_err().error.starts_with("malformed JSON"));
        assert!(object(b"[1]").unwrap_err().error.contains("must be a JSON object, not an array"));
    }
}
