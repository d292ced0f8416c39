//! `skiff members`, `skiff event` and `skiff query` (the gossip operations, as Serf's CLI offers
//! them) and `skiff raft stats|join|remove`: any broker's HTTP admin API from the command line.

use anyhow::{bail, Context};
use clap::Args;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::{json, Value};

#[derive(Args)]
pub struct AdminTarget {
    /// HTTP admin address of any broker
    #[arg(long, env = "SKIFF_HTTP_ADDR", default_value = "127.0.0.1:9644")]
    http_addr: String,
    /// Bearer token of brokers started with --http-auth-token
    #[arg(long, env = "SKIFF_HTTP_AUTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl AdminTarget {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http_addr)
    }

    /// The request with the bearer token, when one was given.
    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => request.header("Authorization", format!("Bearer {token}")),
            None => request,
        }
    }
}

/// The JSON body of a successful answer, or the broker's error message.
fn answer(
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    url: &str,
) -> anyhow::Result<Value> {
    let mut response = match response {
        Ok(response) => response,
        Err(ureq::Error::StatusCode(code)) => bail!("{url} answered HTTP {code}"),
        Err(e) => return Err(e).with_context(|| format!("cannot reach {url}")),
    };
    let status = response.status();
    let body: Value = response
        .body_mut()
        .read_json()
        .with_context(|| format!("{url} did not answer JSON"))?;
    if !status.is_success() {
        bail!(
            "{url}: {}",
            body["error"].as_str().unwrap_or("request failed")
        );
    }
    Ok(body)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

pub fn members(target: &AdminTarget) -> anyhow::Result<()> {
    let url = target.url("/v1/members");
    let members = answer(target.authorized(agent().get(&url)).call(), &url)?;
    for m in members.as_array().context("members are a list")? {
        let tags: Vec<String> = m["tags"]
            .as_object()
            .map(|t| {
                t.iter()
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default();
        println!(
            "{:<24} {:<22} {:<8} {}",
            m["name"].as_str().unwrap_or_default(),
            m["addr"].as_str().unwrap_or_default(),
            m["status"].as_str().unwrap_or_default(),
            tags.join(",")
        );
    }
    Ok(())
}

pub fn event(
    target: &AdminTarget,
    name: &str,
    payload: &str,
    coalesce: bool,
) -> anyhow::Result<()> {
    let url = target.url("/v1/event");
    let body = json!({ "name": name, "payload": payload, "coalesce": coalesce });
    answer(target.authorized(agent().post(&url)).send_json(body), &url)?;
    println!("event '{name}' sent");
    Ok(())
}

pub fn query(
    target: &AdminTarget,
    name: &str,
    payload: &str,
    timeout_ms: Option<u64>,
) -> anyhow::Result<()> {
    let url = target.url("/v1/query");
    let body = json!({ "name": name, "payload": payload, "timeout_ms": timeout_ms });
    let result = answer(target.authorized(agent().post(&url)).send_json(body), &url)?;
    let acks = result["acks"].as_array().map_or(0, Vec::len);
    let responses = result["responses"].as_object().cloned().unwrap_or_default();
    println!("{acks} acknowledgements, {} responses", responses.len());
    for (member, response) in responses {
        println!("{member}: {}", response.as_str().unwrap_or_default());
    }
    Ok(())
}

/// `skiff raft stats`: the quorum as the broker at `target` sees it, as JSON.
pub fn raft_stats(target: &AdminTarget) -> anyhow::Result<()> {
    let url = target.url("/raft/stats");
    let stats = answer(target.authorized(agent().get(&url)).call(), &url)?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    Ok(())
}

/// `skiff raft join`: adds a node to the metadata quorum (through any broker).
pub fn raft_join(target: &AdminTarget, node_id: u64, raft_address: &str) -> anyhow::Result<()> {
    let url = target.url("/raft/join");
    let body = json!({ "node_id": node_id, "raft_address": raft_address });
    let reply = answer(target.authorized(agent().post(&url)).send_json(&body), &url)?;
    println!("node {node_id} joined at log index {}", reply["log_index"]);
    Ok(())
}

/// `skiff raft remove`: removes a node from the metadata quorum (through any broker).
pub fn raft_remove(target: &AdminTarget, node_id: u64) -> anyhow::Result<()> {
    let url = target.url("/raft/remove");
    let body = json!({ "node_id": node_id });
    let reply = answer(target.authorized(agent().post(&url)).send_json(&body), &url)?;
    println!("node {node_id} removed at log index {}", reply["log_index"]);
    Ok(())
}

/// Characters a key cannot carry as they are in the URL path; `/` stays, keys are paths.
const KEY_ESCAPES: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

fn store_url(target: &AdminTarget, key: &str) -> String {
    target.url(&format!("/store/{}", utf8_percent_encode(key, KEY_ESCAPES)))
}

/// `skiff kv get`: prints the value (linearizable unless `stale`).
pub fn kv_get(target: &AdminTarget, key: &str, stale: bool) -> anyhow::Result<()> {
    let url = store_url(target, key);
    let mut request = target.authorized(agent().get(&url));
    if stale {
        request = request.query("consistency", "stale");
    }
    let entry = answer(request.call(), &url)?;
    println!("{}", entry["value"].as_str().unwrap_or_default());
    Ok(())
}

/// `skiff kv put`: sets a key, optionally only at a version (`cas`, 0: only if absent).
pub fn kv_put(
    target: &AdminTarget,
    key: &str,
    value: &str,
    cas: Option<u64>,
) -> anyhow::Result<()> {
    let url = store_url(target, key);
    let mut request = target.authorized(agent().put(&url));
    if let Some(version) = cas {
        request = request.query("cas", version.to_string());
    }
    let written = answer(request.send(value), &url)?;
    println!("{key} is at version {}", written["version"]);
    Ok(())
}

/// `skiff kv delete`: deletes a key, optionally only at a version.
pub fn kv_delete(target: &AdminTarget, key: &str, cas: Option<u64>) -> anyhow::Result<()> {
    let url = store_url(target, key);
    let mut request = target.authorized(agent().delete(&url));
    if let Some(version) = cas {
        request = request.query("cas", version.to_string());
    }
    let deleted = answer(request.call(), &url)?;
    if deleted["deleted"].as_bool() == Some(true) {
        println!("deleted {key}");
    } else {
        println!("{key} did not exist");
    }
    Ok(())
}

/// `skiff kv list`: keys, versions and values under a prefix.
pub fn kv_list(target: &AdminTarget, prefix: &str, limit: Option<usize>) -> anyhow::Result<()> {
    let url = target.url("/store");
    let mut request = target.authorized(agent().get(&url)).query("prefix", prefix);
    if let Some(limit) = limit {
        request = request.query("limit", limit.to_string());
    }
    let listed = answer(request.call(), &url)?;
    for item in listed["items"].as_array().context("items are a list")? {
        println!(
            "{}\t{}\t{}",
            item["key"].as_str().unwrap_or_default(),
            item["version"],
            item["value"].as_str().unwrap_or_default()
        );
    }
    if listed["more"].as_bool() == Some(true) {
        println!("(more keys follow; raise --limit)");
    }
    Ok(())
}
