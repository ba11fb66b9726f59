//! `[cluster]`: where the window counters live. `backend = "local"` (the default) keeps them
//! in this process (saved under `[state] dir`); `"redis"` shares them between every node on
//! one Redis (a URL) or Redis Cluster (a list of node URLs).
use super::{Diagnostics, Spanned};
use crate::screen::quota::shared::{OnFailure, SharedCounters};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRedis {
    One(String),
    Nodes(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCluster {
    pub backend: Option<Spanned<String>>,
    pub redis: Option<Spanned<RawRedis>>,
    pub key_prefix: Option<Spanned<String>>,
    pub timeout_ms: Option<Spanned<i64>>,
    pub on_failure: Option<Spanned<String>>,
    pub nodes: Option<Spanned<i64>>,
    pub max_pending: Option<Spanned<i64>>,
    pub connections: Option<Spanned<i64>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// One URL: a single Redis. Several (or a list of one): the seed nodes of a Redis Cluster.
    pub urls: Vec<String>,
    pub cluster: bool,
    pub key_prefix: String,
    pub timeout: Duration,
    pub on_failure: OnFailure,
    pub nodes: u32,
    /// Calls waiting for Redis at once; beyond it a call is decided by `on_failure`.
    pub max_pending: usize,
    /// Connections to a single Redis (each pipelines many requests).
    pub connections: usize,
}

impl RedisConfig {
    pub fn shared(&self) -> SharedCounters {
        SharedCounters { on_failure: self.on_failure, nodes: self.nodes }
    }
}

/// `None`: the local backend.
pub type ClusterConfig = Option<RedisConfig>;

pub fn validate(raw: &RawCluster, d: &mut Diagnostics<'_>) -> Option<ClusterConfig> {
    let before = d.errors.len();
    let redis = match raw.backend.as_ref().map(|b| (b, b.get_ref().as_str())) {
        None | Some((_, "local")) => false,
        Some((_, "redis")) => true,
        Some((b, other)) => {
            d.error(b.span(), format!("cluster.backend = {other:?}: must be \"local\" or \"redis\""));
            false
        }
    };
    let timeout = d.int(&raw.timeout_ms, "cluster.timeout_ms", 50, 1, 10_000);
    let nodes = d.int(&raw.nodes, "cluster.nodes", 1, 1, 1000);
    let max_pending = d.int(&raw.max_pending, "cluster.max_pending", 10_000, 1, 1_000_000);
    let connections = d.int(&raw.connections, "cluster.connections", 2, 1, 64);
    let on_failure = match raw.on_failure.as_ref().map(|m| (m, m.get_ref().as_str())) {
        None | Some((_, "open")) => OnFailure::Open,
        Some((_, "closed")) => OnFailure::Closed,
        Some((_, "local")) => OnFailure::Local,
        Some((m, other)) => {
            d.error(m.span(), format!("cluster.on_failure = {other:?}: must be \"open\", \"closed\" or \"local\""));
            OnFailure::Open
        }
    };
    let key_prefix = match &raw.key_prefix {
        None => "sipguard:".to_string(),
        Some(p) if p.get_ref().is_empty() || p.get_ref().len() > 64 || p.get_ref().contains(['{', '}']) => {
            d.error(p.span(), "cluster.key_prefix: 1 to 64 characters, without { or } (they mark Redis hash slots)");
            String::new()
        }
        Some(p) => p.get_ref().clone(),
    };
    let (urls, cluster) = match raw.redis.as_ref().map(|r| (r.get_ref(), r.span())) {
        None if redis => {
            let at = d.text.find("[cluster]").unwrap_or(0);
            d.error(
                at..at,
                "cluster.backend = \"redis\" needs redis = \"redis://host:port/db\" (or a list of cluster nodes)",
            );
            (Vec::new(), false)
        }
        None => (Vec::new(), false),
        Some((RawRedis::One(u), span)) => {
            check_url(u, span, false, d);
            (vec![u.clone()], false)
        }
        Some((RawRedis::Nodes(list), span)) => {
            if list.is_empty() {
                d.error(span.clone(), "cluster.redis: an empty list of nodes");
            }
            for u in list {
                check_url(u, span.clone(), true, d);
            }
            (list.clone(), true)
        }
    };
    if d.errors.len() != before {
        return None;
    }
    Some(redis.then(|| RedisConfig {
        urls,
        cluster,
        key_prefix,
        timeout: Duration::from_millis(timeout as u64),
        on_failure,
        nodes: nodes as u32,
        max_pending: max_pending as usize,
        connections: connections as usize,
    }))
}

fn check_url(u: &str, span: std::ops::Range<usize>, cluster: bool, d: &mut Diagnostics<'_>) {
    match url::Url::parse(u) {
        Ok(url) if !matches!(url.scheme(), "redis" | "rediss") => {
            d.error(span, format!("cluster.redis {u:?}: the scheme must be redis:// or rediss://"))
        }
        Ok(url) if url.host_str().is_none_or(str::is_empty) => d.error(span, format!("cluster.redis {u:?}: no host")),
        Ok(url) if cluster && !matches!(url.path(), "" | "/" | "/0") => {
            d.error(span, format!("cluster.redis {u:?}: Redis Cluster has only database 0"))
        }
        Ok(_) => {}
        Err(e) => d.error(span, format!("cluster.redis {u:?}: {e}")),
    }
}
