//! `corral kv`: etcdctl's put, get, del, watch and txn over `etcdserverpb.KV`/`Watch`, with
//! etcdctl's flags and text output.

use std::io::BufRead as _;

use clap::{Args, Parser, Subcommand};
use serde_json::{json, Value};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::conn::{Conn, EtcdGlobals, Settings};
use super::output::{self, emit, emit_json, Format};
use super::{bounded, words, CliError, Interrupt, Result};
use crate::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::pb::etcdserverpb::request_op::Request as Op;
use crate::pb::etcdserverpb::response_op::Response as OpResponse;
use crate::pb::etcdserverpb::watch_client::WatchClient;
use crate::pb::etcdserverpb::watch_request::RequestUnion;
use crate::pb::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use crate::pb::mvccpb::{Event, KeyValue};

#[derive(Subcommand, Debug)]
pub enum KvCommand {
    /// Put a key (etcdctl put)
    Put(PutArgs),
    /// Get a key or a range (etcdctl get)
    Get(GetArgs),
    /// Delete a key or a range (etcdctl del)
    Del(DelArgs),
    /// Print the changes to a key or a range until interrupted (etcdctl watch)
    Watch(WatchArgs),
    /// A transaction from stdin in etcdctl's txn syntax (compares, blank line, success
    /// requests, blank line, failure requests)
    Txn(TxnArgs),
}

#[derive(Args, Debug, Clone)]
pub struct PutArgs {
    pub key: String,
    #[arg(allow_hyphen_values = true)]
    pub value: String,
    /// Attach the key to this lease (hex id, as `lease grant` prints it)
    #[arg(long, value_parser = parse_lease_id, value_name = "LEASE_ID")]
    pub lease: Option<i64>,
    /// Print the previous key-value
    #[arg(long)]
    pub prev_kv: bool,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Order {
    Ascend,
    Descend,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SortBy {
    Key,
    Version,
    Create,
    Modify,
    Value,
}

#[derive(Args, Debug, Clone)]
pub struct GetArgs {
    pub key: String,
    /// End of the range [key, range_end)
    pub range_end: Option<String>,
    /// Every key with this prefix
    #[arg(long)]
    pub prefix: bool,
    /// Every key from this one on (>= key)
    #[arg(long)]
    pub from_key: bool,
    /// Keys only
    #[arg(long)]
    pub keys_only: bool,
    /// Values only
    #[arg(long)]
    pub print_value_only: bool,
    /// Only the number of keys
    #[arg(long)]
    pub count_only: bool,
    /// At most this many keys
    #[arg(long, default_value_t = 0)]
    pub limit: i64,
    /// Read at this revision (0: the latest)
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// ASCEND or DESCEND
    #[arg(long, value_enum, ignore_case = true)]
    pub order: Option<Order>,
    /// KEY, VERSION, CREATE, MODIFY or VALUE
    #[arg(long, value_enum, ignore_case = true)]
    pub sort_by: Option<SortBy>,
    /// l (linearizable, the default) or s (serializable: this member's state, no round trip)
    #[arg(long, default_value = "l", value_parser = ["l", "s"])]
    pub consistency: String,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug, Clone)]
pub struct DelArgs {
    pub key: String,
    /// End of the range [key, range_end)
    pub range_end: Option<String>,
    /// Every key with this prefix
    #[arg(long)]
    pub prefix: bool,
    /// Every key from this one on (>= key)
    #[arg(long)]
    pub from_key: bool,
    /// Print the deleted key-values
    #[arg(long)]
    pub prev_kv: bool,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    pub key: String,
    /// End of the range [key, range_end)
    pub range_end: Option<String>,
    /// Every key with this prefix
    #[arg(long)]
    pub prefix: bool,
    /// Start at this revision (replaying history)
    #[arg(long, default_value_t = 0)]
    pub rev: i64,
    /// Also print the previous key-value of each event
    #[arg(long)]
    pub prev_kv: bool,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

#[derive(Args, Debug)]
pub struct TxnArgs {
    /// Prompt for each part (compares, success, failure), as etcdctl txn -i
    #[arg(short = 'i', long)]
    pub interactive: bool,
    #[command(flatten)]
    pub g: EtcdGlobals,
}

pub fn parse_lease_id(s: &str) -> Result<i64, String> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .map(|v| v as i64)
        .map_err(|_| format!("invalid lease id {s:?} (hex, as `lease grant` prints it)"))
}

/// etcd's prefix end: the key with its last byte below 0xff incremented and what follows
/// dropped; "\0" (every key) when there is none.
fn prefix_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn range_end(key: &str, end: Option<&str>, prefix: bool, from_key: bool) -> Result<Vec<u8>> {
    let set = [end.is_some(), prefix, from_key]
        .iter()
        .filter(|b| **b)
        .count();
    if set > 1 {
        return Err(CliError::new(
            "give only one of a range end, --prefix and --from-key",
        ));
    }
    Ok(if prefix {
        prefix_end(key.as_bytes())
    } else if from_key {
        vec![0]
    } else {
        end.map(|e| e.as_bytes().to_vec()).unwrap_or_default()
    })
}

pub async fn run(c: KvCommand, resolve: impl Fn(&EtcdGlobals) -> Result<Settings>) -> Result<()> {
    match c {
        KvCommand::Put(a) => put(&resolve(&a.g)?, &a).await,
        KvCommand::Get(a) => get(&resolve(&a.g)?, &a).await,
        KvCommand::Del(a) => del(&resolve(&a.g)?, &a).await,
        KvCommand::Watch(a) => watch(&resolve(&a.g)?, &a).await,
        KvCommand::Txn(a) => txn(&resolve(&a.g)?, &a).await,
    }
}

fn put_request(a: &PutArgs) -> PutRequest {
    PutRequest {
        key: a.key.clone().into_bytes(),
        value: a.value.clone().into_bytes(),
        lease: a.lease.unwrap_or(0),
        prev_kv: a.prev_kv,
        ..Default::default()
    }
}

fn get_request(a: &GetArgs) -> Result<RangeRequest> {
    if a.key.is_empty() && !a.from_key {
        return Err(CliError::new("the key must not be empty"));
    }
    Ok(RangeRequest {
        key: key_bytes(&a.key, a.from_key),
        range_end: range_end(&a.key, a.range_end.as_deref(), a.prefix, a.from_key)?,
        limit: a.limit,
        revision: a.rev,
        sort_order: match a.order {
            None => SortOrder::None as i32,
            Some(Order::Ascend) => SortOrder::Ascend as i32,
            Some(Order::Descend) => SortOrder::Descend as i32,
        },
        sort_target: match a.sort_by {
            None | Some(SortBy::Key) => SortTarget::Key as i32,
            Some(SortBy::Version) => SortTarget::Version as i32,
            Some(SortBy::Create) => SortTarget::Create as i32,
            Some(SortBy::Modify) => SortTarget::Mod as i32,
            Some(SortBy::Value) => SortTarget::Value as i32,
        },
        serializable: a.consistency == "s",
        keys_only: a.keys_only,
        count_only: a.count_only,
        ..Default::default()
    })
}

/// etcdctl's rule: `--from-key ""` means every key, from "\0".
fn key_bytes(key: &str, from_key: bool) -> Vec<u8> {
    if key.is_empty() && from_key {
        vec![0]
    } else {
        key.as_bytes().to_vec()
    }
}

fn del_request(a: &DelArgs) -> Result<DeleteRangeRequest> {
    if a.key.is_empty() && !a.from_key {
        return Err(CliError::new("the key must not be empty"));
    }
    Ok(DeleteRangeRequest {
        key: key_bytes(&a.key, a.from_key),
        range_end: range_end(&a.key, a.range_end.as_deref(), a.prefix, a.from_key)?,
        prev_kv: a.prev_kv,
    })
}

async fn put(settings: &Settings, a: &PutArgs) -> Result<()> {
    let req = put_request(a);
    let r = bounded(settings, async {
        let conn = Conn::connect(settings).await?;
        Ok(KvClient::new(conn.channel).put(req).await?.into_inner())
    })
    .await?;
    match settings.format {
        Format::Json => emit_json(&put_json(&r)),
        Format::Table => emit(&put_table(a.key.as_bytes(), &r, a.prev_kv)),
        Format::Simple => emit(&put_text(&r)),
    }
}

/// The key, the revision the put made and, with --prev-kv, what it replaced (empty cells
/// when the key is new).
fn put_table(key: &[u8], r: &PutResponse, prev_kv: bool) -> String {
    let revision = r.header.as_ref().map_or(0, |h| h.revision).to_string();
    if !prev_kv {
        return output::table(&["KEY", "REVISION"], &[vec![output::cell(key), revision]]);
    }
    let (prev_value, prev_version) = r.prev_kv.as_ref().map_or_else(Default::default, |kv| {
        (output::cell(&kv.value), kv.version.to_string())
    });
    output::table(
        &["KEY", "REVISION", "PREV VALUE", "PREV VERSION"],
        &[vec![output::cell(key), revision, prev_value, prev_version]],
    )
}

fn del_table(r: &DeleteRangeResponse) -> String {
    output::table(&["DELETED"], &[vec![r.deleted.to_string()]])
}

fn put_text(r: &PutResponse) -> String {
    let mut out = String::from("OK\n");
    if let Some(kv) = &r.prev_kv {
        out.push_str(&kv_text(kv));
    }
    out
}

fn put_json(r: &PutResponse) -> Value {
    let mut v = json!({"header": output::header_json(r.header.as_ref())});
    if let Some(kv) = &r.prev_kv {
        v["prev_kv"] = output::kv_json(kv);
    }
    v
}

fn kv_text(kv: &KeyValue) -> String {
    format!("{}\n{}\n", output::text(&kv.key), output::text(&kv.value))
}

async fn get(settings: &Settings, a: &GetArgs) -> Result<()> {
    let req = get_request(a)?;
    let r = bounded(settings, async {
        let mut conn = Conn::connect(settings).await?;
        conn.call(true, |ch| {
            let req = req.clone();
            async move { KvClient::new(ch).range(req).await }
        })
        .await
    })
    .await?
    .into_inner();
    match settings.format {
        Format::Json => emit_json(&range_json(&r)),
        Format::Table => emit(&range_table(&r, a.count_only)),
        Format::Simple => emit(&range_text(
            &r,
            a.keys_only,
            a.print_value_only,
            a.count_only,
        )),
    }
}

fn range_text(r: &RangeResponse, keys_only: bool, values_only: bool, count_only: bool) -> String {
    if count_only {
        return format!("{}\n", r.count);
    }
    let mut out = String::new();
    for kv in &r.kvs {
        if !values_only {
            out.push_str(&output::text(&kv.key));
            out.push('\n');
        }
        if !keys_only {
            out.push_str(&output::text(&kv.value));
            out.push('\n');
        }
    }
    out
}

fn range_table(r: &RangeResponse, count_only: bool) -> String {
    if count_only {
        return output::table(&["COUNT"], &[vec![r.count.to_string()]]);
    }
    let rows: Vec<Vec<String>> = r
        .kvs
        .iter()
        .map(|kv| {
            vec![
                output::cell(&kv.key),
                output::cell(&kv.value),
                kv.create_revision.to_string(),
                kv.mod_revision.to_string(),
                kv.version.to_string(),
                output::hex_id(kv.lease as u64),
            ]
        })
        .collect();
    output::table(
        &["KEY", "VALUE", "CREATE REV", "MOD REV", "VERSION", "LEASE"],
        &rows,
    )
}

fn range_json(r: &RangeResponse) -> Value {
    json!({
        "header": output::header_json(r.header.as_ref()),
        "kvs": r.kvs.iter().map(output::kv_json).collect::<Vec<_>>(),
        "more": r.more,
        "count": r.count,
    })
}

async fn del(settings: &Settings, a: &DelArgs) -> Result<()> {
    let req = del_request(a)?;
    let r = bounded(settings, async {
        let conn = Conn::connect(settings).await?;
        Ok(KvClient::new(conn.channel)
            .delete_range(req)
            .await?
            .into_inner())
    })
    .await?;
    match settings.format {
        Format::Json => emit_json(&del_json(&r)),
        Format::Table => emit(&del_table(&r)),
        Format::Simple => emit(&del_text(&r)),
    }
}

fn del_text(r: &DeleteRangeResponse) -> String {
    let mut out = format!("{}\n", r.deleted);
    for kv in &r.prev_kvs {
        out.push_str(&kv_text(kv));
    }
    out
}

fn del_json(r: &DeleteRangeResponse) -> Value {
    json!({
        "header": output::header_json(r.header.as_ref()),
        "deleted": r.deleted,
        "prev_kvs": r.prev_kvs.iter().map(output::kv_json).collect::<Vec<_>>(),
    })
}

// ----------------------------------------------------------------------------- watch

fn event_type(e: &Event) -> &'static str {
    if e.r#type == crate::pb::mvccpb::event::EventType::Delete as i32 {
        "DELETE"
    } else {
        "PUT"
    }
}

async fn watch(settings: &Settings, a: &WatchArgs) -> Result<()> {
    let mut stop = Interrupt::new();
    if a.key.is_empty() {
        return Err(CliError::new("the key must not be empty"));
    }
    let end = range_end(&a.key, a.range_end.as_deref(), a.prefix, false)?;
    let mut conn = bounded(settings, Conn::connect(settings)).await?;
    // Where to (re)start: after the last event seen, so that a reconnect to another
    // endpoint neither loses nor repeats an event.
    let mut start = a.rev;
    loop {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: a.key.clone().into_bytes(),
                range_end: end.clone(),
                start_revision: start,
                prev_kv: a.prev_kv,
                ..Default::default()
            })),
        };
        let _ = tx.send(create);
        let opened = WatchClient::new(conn.channel.clone())
            .watch(UnboundedReceiverStream::new(rx))
            .await;
        let mut stream = match opened {
            Ok(s) => s.into_inner(),
            Err(s) => {
                if s.code() == tonic::Code::Unavailable {
                    bounded(settings, conn.failover()).await?;
                    continue;
                }
                return Err(CliError::from_status(&s, Some(conn.endpoint())));
            }
        };
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = stop.wait() => return Ok(()),
            };
            let r = match msg {
                Ok(Some(r)) => r,
                // The endpoint went away: carry on from the next one.
                Ok(None) | Err(_) => break,
            };
            if r.canceled {
                let why = if r.compact_revision > 0 {
                    format!(
                        "watch canceled: revision {start} is compacted (oldest is {})",
                        r.compact_revision
                    )
                } else if r.cancel_reason.is_empty() {
                    "watch canceled by the server".to_string()
                } else {
                    format!("watch canceled: {}", r.cancel_reason)
                };
                return Err(CliError::new(why));
            }
            if start == 0 && r.created {
                // Later reconnects resume from right after what this stream started at.
                start = r.header.as_ref().map_or(0, |h| h.revision) + 1;
            }
            for e in &r.events {
                if let Some(kv) = &e.kv {
                    start = start.max(kv.mod_revision + 1);
                }
                match settings.format {
                    Format::Json => {
                        let mut v = json!({
                            "type": event_type(e),
                            "kv": e.kv.as_ref().map(output::kv_json),
                            "revision": r.header.as_ref().map_or(0, |h| h.revision),
                        });
                        if let Some(p) = &e.prev_kv {
                            v["prev_kv"] = output::kv_json(p);
                        }
                        emit_json(&v)?;
                    }
                    _ => {
                        let mut out = format!("{}\n", event_type(e));
                        if let Some(p) = &e.prev_kv {
                            out.push_str(&kv_text(p));
                        }
                        if let Some(kv) = &e.kv {
                            if e.r#type == crate::pb::mvccpb::event::EventType::Delete as i32 {
                                out.push_str(&format!("{}\n", output::text(&kv.key)));
                            } else {
                                out.push_str(&kv_text(kv));
                            }
                        }
                        emit(&out)?;
                    }
                }
            }
        }
        bounded(settings, conn.failover()).await?;
    }
}

// ------------------------------------------------------------------------------- txn

/// A request inside a txn, parsed with the same flags as the commands.
#[derive(Parser, Debug)]
#[command(no_binary_name = true, disable_help_flag = true)]
enum TxnOp {
    Put(PutArgs),
    Get(GetArgs),
    Del(DelArgs),
}

fn parse_op(line: &str) -> Result<RequestOp> {
    let words = words::split(line).map_err(|e| CliError::new(format!("{line:?}: {e}")))?;
    let op = TxnOp::try_parse_from(words)
        .map_err(|e| CliError::new(format!("{line:?}: {}", super::usage_line(&e))))?;
    Ok(RequestOp {
        request: Some(match op {
            TxnOp::Put(a) => Op::RequestPut(put_request(&a)),
            TxnOp::Get(a) => Op::RequestRange(get_request(&a)?),
            TxnOp::Del(a) => Op::RequestDeleteRange(del_request(&a)?),
        }),
    })
}

/// etcdctl's compare syntax: `value("key") = "v"`, `mod("key") > "3"`, `version("k") != "0"`,
/// `create("k") < "10"`, `lease("k") = "694d..."`.
fn parse_compare(line: &str) -> Result<Compare> {
    let bad = |why: &str| CliError::new(format!("bad compare {line:?}: {why}"));
    let (target, rest) = line
        .split_once('(')
        .ok_or_else(|| bad("expected target(\"key\") op \"value\""))?;
    let (key, rest) = rest.rsplit_once(')').ok_or_else(|| bad("missing ')'"))?;
    let key = words::split(key).map_err(|e| bad(&e))?;
    let [key] = key.as_slice() else {
        return Err(bad("expected one key in the parentheses"));
    };
    let rest = rest.trim();
    let (op, value) = ["!=", "=", "<", ">"]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|v| (*op, v)))
        .ok_or_else(|| bad("expected one of = != < >"))?;
    let value = words::split(value).map_err(|e| bad(&e))?;
    let [value] = value.as_slice() else {
        return Err(bad("expected one value after the operator"));
    };
    let result = match op {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        _ => CompareResult::Greater,
    };
    let num = |v: &str| {
        v.parse::<i64>()
            .map_err(|_| bad(&format!("{v:?} is not a number")))
    };
    let (target, union) = match target.trim().to_ascii_lowercase().as_str() {
        "value" | "val" => (
            CompareTarget::Value,
            TargetUnion::Value(value.clone().into_bytes()),
        ),
        "version" | "ver" => (CompareTarget::Version, TargetUnion::Version(num(value)?)),
        "create" | "c" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(num(value)?),
        ),
        "mod" | "m" => (CompareTarget::Mod, TargetUnion::ModRevision(num(value)?)),
        "lease" => (
            CompareTarget::Lease,
            TargetUnion::Lease(parse_lease_id(value).map_err(|e| bad(&e))?),
        ),
        t => return Err(bad(&format!("unknown target {t:?}"))),
    };
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key: key.clone().into_bytes(),
        range_end: Vec::new(),
        target_union: Some(union),
    })
}

/// Reads the three blank-line-separated parts of a txn.
fn read_txn(interactive: bool) -> Result<TxnRequest> {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut part = |prompt: &str| -> Result<Vec<String>> {
        if interactive {
            emit(&format!("{prompt}\n"))?;
        }
        let mut out = Vec::new();
        for line in lines.by_ref() {
            let line = line.map_err(|e| CliError::new(format!("reading stdin: {e}")))?;
            let line = line.trim();
            if line.is_empty() {
                break;
            }
            out.push(line.to_string());
        }
        Ok(out)
    };
    let compares = part("compares:")?;
    let success = part("success requests (get, put, del):")?;
    let failure = part("failure requests (get, put, del):")?;
    Ok(TxnRequest {
        compare: compares
            .iter()
            .map(|l| parse_compare(l))
            .collect::<Result<_>>()?,
        success: success.iter().map(|l| parse_op(l)).collect::<Result<_>>()?,
        failure: failure.iter().map(|l| parse_op(l)).collect::<Result<_>>()?,
    })
}

async fn txn(settings: &Settings, a: &TxnArgs) -> Result<()> {
    let req = read_txn(a.interactive)?;
    // The table names the key each put wrote: kept from the request (the branch taken).
    let req_ops = (req.success.clone(), req.failure.clone());
    let r = bounded(settings, async {
        let conn = Conn::connect(settings).await?;
        Ok(KvClient::new(conn.channel).txn(req).await?.into_inner())
    })
    .await?;
    if settings.format == Format::Json {
        let responses: Vec<Value> = r
            .responses
            .iter()
            .map(|op| match &op.response {
                Some(OpResponse::ResponsePut(p)) => json!({"put": put_json(p)}),
                Some(OpResponse::ResponseRange(g)) => json!({"get": range_json(g)}),
                Some(OpResponse::ResponseDeleteRange(d)) => json!({"del": del_json(d)}),
                _ => Value::Null,
            })
            .collect();
        return emit_json(&json!({
            "header": output::header_json(r.header.as_ref()),
            "succeeded": r.succeeded,
            "responses": responses,
        }));
    }
    if settings.format == Format::Table {
        return emit(&txn_table(&req_ops, &r));
    }
    let mut out = String::from(if r.succeeded {
        "SUCCESS\n"
    } else {
        "FAILURE\n"
    });
    for op in &r.responses {
        out.push('\n');
        match &op.response {
            Some(OpResponse::ResponsePut(p)) => out.push_str(&put_text(p)),
            Some(OpResponse::ResponseRange(g)) => out.push_str(&range_text(g, false, false, false)),
            Some(OpResponse::ResponseDeleteRange(d)) => out.push_str(&del_text(d)),
            _ => {}
        }
    }
    emit(&out)
}

/// Whether it succeeded and at which revision, then one table per response of the branch
/// taken, as `put`, `get` and `del` draw theirs.
fn txn_table(
    ops: &(Vec<RequestOp>, Vec<RequestOp>),
    r: &crate::pb::etcdserverpb::TxnResponse,
) -> String {
    let mut out = output::table(
        &["SUCCEEDED", "REVISION"],
        &[vec![
            r.succeeded.to_string(),
            r.header.as_ref().map_or(0, |h| h.revision).to_string(),
        ]],
    );
    let branch = if r.succeeded { &ops.0 } else { &ops.1 };
    for (i, op) in r.responses.iter().enumerate() {
        let asked = branch.get(i).and_then(|o| o.request.as_ref());
        let table = match (&op.response, asked) {
            (Some(OpResponse::ResponsePut(p)), Some(Op::RequestPut(q))) => {
                put_table(&q.key, p, q.prev_kv)
            }
            (Some(OpResponse::ResponsePut(p)), _) => put_table(b"", p, false),
            (Some(OpResponse::ResponseRange(g)), asked) => range_table(
                g,
                matches!(asked, Some(Op::RequestRange(q)) if q.count_only),
            ),
            (Some(OpResponse::ResponseDeleteRange(d)), _) => del_table(d),
            _ => continue,
        };
        out.push_str(&table);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn compares_parse_like_etcdctl() {
        let c = parse_compare(r#"value("greeting") = "hello""#).unwrap();
        assert_eq!(c.key, b"greeting");
        assert_eq!(c.target, CompareTarget::Value as i32);
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"hello".to_vec())));
        let c = parse_compare(r#"mod("k") > "3""#).unwrap();
        assert_eq!(c.result, CompareResult::Greater as i32);
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(3)));
        let c = parse_compare(r#"version("k") != "0""#).unwrap();
        assert_eq!(c.result, CompareResult::NotEqual as i32);
        assert!(parse_compare(r#"mod("k") > "x""#).is_err());
        assert!(parse_compare("nonsense").is_err());
        assert!(parse_compare(r#"size("k") = "1""#).is_err());
    }

    #[test]
    fn ops_parse_with_the_commands_flags() {
        let op = parse_op("put k 'a value'").unwrap();
        match op.request {
            Some(Op::RequestPut(p)) => assert_eq!(p.value, b"a value"),
            other => panic!("{other:?}"),
        }
        match parse_op("get k --prefix").unwrap().request {
            Some(Op::RequestRange(r)) => assert_eq!(r.range_end, b"l"),
            other => panic!("{other:?}"),
        }
        assert!(parse_op("frobnicate k").is_err());
        assert!(parse_op("put k").is_err());
    }
}
