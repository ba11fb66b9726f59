//! The HTTP decision API through the real binary: every verdict, strict JSON (400 naming
//! the field), the bearer token, batch limits, dry runs leaving counters untouched, quotas
//! shared with calls through the proxy, the decision log; and the OpenAPI document checked
//! against the implementation (every documented path answers its example with a body that
//! fits the documented schema, and every route is documented).
mod common;

use common::raw::sip;
use common::{NextHop, Ports, Sipguard, UdpPeer};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const TOKEN: &str = "t0ken-for-the-decision-api";

const TEMPLATE: &str = r#"
[server]
listen = ["udp:127.0.0.1:{udp_port}"]

[upstream]
uri = "sip:127.0.0.1:{upstream_port};transport=udp"

[admin]
listen = "127.0.0.1:{admin_port}"
token = "t0ken-for-the-decision-api"

[log]
level = "warn"
decisions = "{dir}/decisions.jsonl"

[screening]
account_header = "X-Account"
trusted_sources = ["127.0.0.1/32"]
caller_id_numbers = "owned.csv"
unknown_account = "reject"

[screening.quota]
per_day = 3

[[account]]
id = "lax"
sources = ["203.0.113.0/24"]
mode = "report"

[[dnc.list]]
name = "national"
path = "dnc.txt"
"#;

const OWNED: &str = "account,number\nacct0001,+12125550100\nlax,+12125550100\n";
const BLOCKED: &str = "+13125550111";
const FREE: &str = "+13125550199";

fn start() -> Sipguard {
    Sipguard::start_with(TEMPLATE, Ports::allocate(), &[("owned.csv", OWNED), ("dnc.txt", &format!("{BLOCKED}\n"))])
}

/// One HTTP request with a body; (status, body).
fn request(sg: &Sipguard, method: &str, path: &str, body: &str, token: Option<&str>) -> (u16, String) {
    let addr = SocketAddr::from(([127, 0, 0, 1], sg.ports().admin));
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap_or_else(|e| panic!("write: {e}"));
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("bad response: {raw}"));
    (status, body.to_string())
}

fn post(sg: &Sipguard, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = request(sg, "POST", path, &body.to_string(), Some(TOKEN));
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("{status} `{text}`: {e}")))
}

fn call(account: Option<&str>, caller: &str, callee: &str, id: &str) -> Value {
    let mut v = json!({"source_ip": "127.0.0.1", "caller": caller, "callee": callee, "call_id": id});
    if let Some(a) = account {
        v["account"] = json!(a);
    }
    v
}

fn calls_today(sg: &Sipguard, account: &str) -> u64 {
    let (status, text) = request(sg, "GET", &format!("/accounts/{account}"), "", Some(TOKEN));
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["calls_today"].as_u64().unwrap_or_else(|| panic!("{v}"))
}

#[test]
fn every_verdict_and_dry_runs_leave_counters_untouched() {
    let sg = start();
    let ok = call(Some("acct0001"), "+12125550100", FREE, "c1");
    // Dry runs: forward, charged nothing however many.
    let mut dry = ok.clone();
    dry["dry_run"] = json!(true);
    for _ in 0..5 {
        let (s, a) = post(&sg, "/v1/screen", &dry);
        assert_eq!(s, 200, "{a}");
        assert_eq!(a["verdict"], "forward", "{a}");
        assert_eq!(a["dry_run"], true);
    }
    assert_eq!(calls_today(&sg, "acct0001"), 0, "dry runs charge nothing");
    // Forward, with the headers for the INVITE sent on.
    let (s, a) = post(&sg, "/v1/screen", &ok);
    assert_eq!(s, 200);
    assert_eq!(
        a,
        json!({"verdict": "forward", "rule": null, "code": null, "reason": null,
               "headers": {"X-Sipguard-Verdict": "pass", "X-Sipguard-Account": "acct0001"},
               "account": "acct0001", "verstat": null, "dry_run": false})
    );
    assert_eq!(calls_today(&sg, "acct0001"), 1);
    // Each reject rule.
    let (_, a) = post(&sg, "/v1/screen", &call(Some("acct0001"), "+12125550100", BLOCKED, "c2"));
    assert_eq!(
        (a["verdict"].as_str(), a["rule"].as_str(), a["code"].as_u64()),
        (Some("reject"), Some("dnc"), Some(608)),
        "{a}"
    );
    assert_eq!(a["list"], "national");
    assert!(a["headers"]["Reason"].as_str().is_some_and(|r| r.starts_with("SIP;cause=608")), "{a}");
    let (_, a) = post(&sg, "/v1/screen", &call(Some("acct0001"), "+12125550142", FREE, "c3"));
    assert_eq!((a["rule"].as_str(), a["code"].as_u64()), (Some("caller_id_unowned"), Some(403)), "{a}");
    let (_, a) = post(&sg, "/v1/screen", &call(Some("nobody"), "+12125550100", FREE, "c4"));
    assert_eq!((a["rule"].as_str(), a["code"].as_u64()), (Some("unknown_account"), Some(403)), "{a}");
    let (_, a) = post(&sg, "/v1/screen", &call(Some("acct0001"), "not a number", FREE, "c5"));
    assert_eq!(a["rule"], "caller_id_invalid", "{a}");
    assert_eq!(calls_today(&sg, "acct0001"), 1, "rejected calls charge nothing");
    // Report mode: would_reject, found by source_ip (no account given).
    let mut lax = call(None, "+12125550100", BLOCKED, "c6");
    lax["source_ip"] = json!("203.0.113.9");
    let (_, a) = post(&sg, "/v1/screen", &lax);
    assert_eq!(
        (a["verdict"].as_str(), a["rule"].as_str(), a["account"].as_str()),
        (Some("would_reject"), Some("dnc"), Some("lax")),
        "{a}"
    );
    assert_eq!(a["headers"]["X-Sipguard-Rule"], "dnc");
    // Quota shared with the proxy: one more API call, then a call through the proxy fill
    // per_day = 3; the next API call is refused.
    assert_eq!(post(&sg, "/v1/screen", &ok).1["verdict"], "forward");
    let hop = NextHop::bind(sg.ports().upstream);
    let peer = UdpPeer::bind();
    peer.send_to(
        &sip(&format!(
            "INVITE sip:{FREE}@127.0.0.1;user=phone SIP/2.0
             Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-sip1;rport
             From: <sip:+12125550100@127.0.0.1;user=phone>;tag=f1
             To: <sip:{FREE}@127.0.0.1;user=phone>
             Call-ID: sip1@api
             CSeq: 1 INVITE
             Max-Forwards: 70
             X-Account: acct0001
             Content-Length: 0
            ",
            port = peer.port()
        )),
        sg.udp_addr(),
    );
    assert_eq!(hop.wait_for(1, Duration::from_secs(5)).len(), 1, "the SIP call is forwarded");
    assert_eq!(calls_today(&sg, "acct0001"), 3);
    let (_, a) = post(&sg, "/v1/screen", &ok);
    assert_eq!((a["rule"].as_str(), a["code"].as_u64()), (Some("quota"), Some(403)), "{a}");
    let (_, a) = post(&sg, "/v1/screen", &dry);
    assert_eq!(a["rule"], "quota", "a dry run sees the same counters");
    // The decision log has every committed API call (not the dry runs) and the SIP call.
    let path = sg.dir().join("decisions.jsonl");
    let deadline = Instant::now() + Duration::from_secs(5);
    let want = 9;
    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let n = text.lines().count();
        if n >= want || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(common::POLL);
    };
    let ids: Vec<String> = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["call_id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(ids, ["c1", "c2", "c3", "c4", "c5", "c6", "c1", "sip1@api", "c1"], "{lines}");
}

#[test]
fn bad_requests_name_the_field_and_the_token_is_required() {
    let sg = start();
    let bad = |body: &str| {
        let (s, text) = request(&sg, "POST", "/v1/screen", body, Some(TOKEN));
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("`{text}`: {e}"));
        (s, v)
    };
    let (s, v) = bad("{\"caller\": ");
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().starts_with("malformed JSON"), "{v}");
    for body in ["[]", "\"x\"", "42", "null"] {
        let (s, v) = bad(body);
        assert_eq!(s, 400, "{body}");
        assert!(v["error"].as_str().unwrap().contains("must be a JSON object"), "{v}");
    }
    let base = call(Some("acct0001"), "+12125550100", FREE, "b1");
    for (field, value, says) in [
        ("caller", json!(12125550100u64), "must be a string, not a number"),
        ("source_ip", json!("localhost"), "is not an IP address"),
        ("source_ip", json!(null), "is required"),
        ("dry_run", json!("true"), "must be a boolean"),
        ("account", json!(["acct0001"]), "must be a string, not an array"),
        ("calee", json!("+1"), "unknown field"),
    ] {
        let mut v = base.clone();
        v[field] = value;
        let (s, got) = bad(&v.to_string());
        assert_eq!(s, 400, "{field}: {got}");
        assert_eq!(got["field"], field, "{got}");
        assert!(got["error"].as_str().unwrap().contains(says), "{field}: {got}");
    }
    // The bearer token.
    for token in [None, Some("wrong")] {
        let (s, _) = request(&sg, "POST", "/v1/screen", &base.to_string(), token);
        assert_eq!(s, 401);
        let (s, _) = request(&sg, "POST", "/v1/screen/batch", "{\"calls\": []}", token);
        assert_eq!(s, 401);
    }
    assert_eq!(calls_today(&sg, "acct0001"), 0, "nothing was screened");
}

#[test]
fn batches_up_to_1000_in_order_and_all_or_nothing() {
    let sg = start();
    let calls: Vec<Value> = (0..1000)
        .map(|i| call(Some("acct0001"), "+12125550100", if i % 2 == 0 { FREE } else { BLOCKED }, &format!("b{i}")))
        .collect();
    let (s, v) = post(&sg, "/v1/screen/batch", &json!({"calls": calls, "dry_run": true}));
    assert_eq!(s, 200);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 1000);
    for (i, r) in results.iter().enumerate() {
        let want = if i % 2 == 0 { "forward" } else { "reject" };
        assert_eq!((r["verdict"].as_str(), r["dry_run"].as_bool()), (Some(want), Some(true)), "{i}: {r}");
    }
    assert_eq!(calls_today(&sg, "acct0001"), 0);
    // 1001 calls: refused whole.
    let mut over = calls.clone();
    over.push(call(Some("acct0001"), "+12125550100", FREE, "b1000"));
    let (s, v) = post(&sg, "/v1/screen/batch", &json!({"calls": over}));
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["field"], "calls");
    // A bad call anywhere: 400 naming it, and nothing screened (no quota taken).
    let mut some = vec![call(Some("acct0001"), "+12125550100", FREE, "x0"); 3];
    some[2]["caller"] = json!(false);
    let (s, v) = post(&sg, "/v1/screen/batch", &json!({"calls": some}));
    assert_eq!((s, v["field"].as_str()), (400, Some("calls[2].caller")), "{v}");
    let (s, v) = post(&sg, "/v1/screen/batch", &json!({"calls": [1]}));
    assert_eq!((s, v["field"].as_str()), (400, Some("calls[0]")), "{v}");
    let (s, v) = post(&sg, "/v1/screen/batch", &json!({"calls": {}}));
    assert_eq!((s, v["field"].as_str()), (400, Some("calls")), "{v}");
    assert_eq!(calls_today(&sg, "acct0001"), 0);
    // Committed: per_day = 3 across the batch, in order; a per-call dry_run is honoured.
    let mut four = vec![call(Some("acct0001"), "+12125550100", FREE, "k"); 5];
    four[0]["dry_run"] = json!(true);
    let (_, v) = post(&sg, "/v1/screen/batch", &json!({"calls": four}));
    let got: Vec<(&str, bool)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["verdict"].as_str().unwrap_or(""), r["dry_run"].as_bool().unwrap_or(false)))
        .collect();
    assert_eq!(got, [("forward", true), ("forward", false), ("forward", false), ("forward", false), ("reject", false)]);
    assert_eq!(calls_today(&sg, "acct0001"), 3);
}

/// A small JSON Schema (OpenAPI 3.0 subset) check: type, nullable, enum, required,
/// properties, additionalProperties, items, maxItems, $ref into components.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        return check(doc, &doc["components"]["schemas"][name], v, at);
    }
    if v.is_null() {
        return if schema["nullable"] == true { Ok(()) } else { Err(format!("{at}: null where not nullable")) };
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let fits = match ty {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_u64() || v.is_i64(),
        Some("boolean") => v.is_boolean(),
        Some(other) => return Err(format!("{at}: schema type {other} unknown to the check")),
        None => true,
    };
    if !fits {
        return Err(format!("{at}: {v} is not {ty:?}"));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        return Err(format!("{at}: {v} not in {e:?}"));
    }
    if let Some(o) = v.as_object() {
        for r in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            let r = r.as_str().unwrap_or_default();
            if !o.contains_key(r) {
                return Err(format!("{at}: required `{r}` missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, val) in o {
            match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                (Some(p), _) => check(doc, p, val, &format!("{at}.{k}"))?,
                (None, Some(Value::Bool(false))) => return Err(format!("{at}: `{k}` not in the schema")),
                (None, Some(extra)) if extra.is_object() => check(doc, extra, val, &format!("{at}.{k}"))?,
                (None, _) => {}
            }
        }
    }
    if let Some(a) = v.as_array() {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && a.len() as u64 > max
        {
            return Err(format!("{at}: more than {max} items"));
        }
        if let Some(items) = schema.get("items") {
            for (i, x) in a.iter().enumerate() {
                check(doc, items, x, &format!("{at}[{i}]"))?;
            }
        }
    }
    Ok(())
}

fn response_schema(op: &Value, status: u16) -> &Value {
    &op["responses"][status.to_string()]["content"]["application/json"]["schema"]
}

#[test]
fn the_openapi_document_matches_the_implementation() {
    let sg = start();
    let (s, text) = request(&sg, "GET", "/v1/openapi.json", "", Some(TOKEN));
    assert_eq!(s, 200);
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), p.clone())))
        .collect();
    documented.sort();
    let mut served: Vec<(String, String)> =
        sipguard::admin::screen_api::PATHS.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    served.sort();
    assert_eq!(documented, served, "every route documented, nothing documented that is not served");
    for (method, path) in &served {
        let op = &doc["paths"][path.as_str()][method.as_str()];
        if method == "get" {
            let (s, body) = request(&sg, "GET", path, "", Some(TOKEN));
            let v: Value = serde_json::from_str(&body).unwrap();
            check(&doc, response_schema(op, s), &v, path).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        let content = &op["requestBody"]["content"]["application/json"];
        let example = &content["example"];
        // The example fits the request schema, and the answer fits the 200 schema.
        check(&doc, &content["schema"], example, &format!("{path} example")).unwrap_or_else(|e| panic!("{e}"));
        let (s, v) = post(&sg, path, example);
        assert_eq!(s, 200, "{path}: {v}");
        check(&doc, response_schema(op, 200), &v, path).unwrap_or_else(|e| panic!("{e}"));
        // Every verdict shape fits too: a reject with a list, and a would_reject.
        if path == "/v1/screen" {
            for body in [
                call(Some("acct0001"), "+12125550100", BLOCKED, "o1"),
                json!({"source_ip": "203.0.113.9", "caller": "+12125550100", "callee": BLOCKED, "call_id": "o2"}),
                call(Some("nobody"), "+12125550100", FREE, "o3"),
            ] {
                let (s, v) = post(&sg, path, &body);
                assert_eq!(s, 200);
                check(&doc, response_schema(op, 200), &v, path).unwrap_or_else(|e| panic!("{e}: {v}"));
            }
        }
        // Errors fit the documented Error schema, with documented statuses.
        let mut wrong = example.clone();
        if path == "/v1/screen" {
            wrong["caller"] = json!(1);
        } else {
            wrong["calls"] = json!(vec![example["calls"][0].clone(); 1001]);
        }
        let (s, v) = post(&sg, path, &wrong);
        assert!(op["responses"].get(s.to_string()).is_some(), "{path}: status {s} not documented");
        check(&doc, response_schema(op, s), &v, path).unwrap_or_else(|e| panic!("{e}: {v}"));
        let (s, _) = request(&sg, "POST", path, &example.to_string(), None);
        assert!(s == 401 && op["responses"].get("401").is_some());
    }
}
