//! How results are shown: `simple` (zkCli's and etcdctl's own text), `table` (aligned ASCII
//! tables, as etcdctl draws them) and `json` (one compact JSON document per result or event,
//! so `jq` reads single answers and streams alike).
//!
//! JSON conventions, chosen so that jq never mangles a value: keys, values and znode data are
//! strings when they are UTF-8 (otherwise base64, with `"encoding": "base64"` beside them);
//! 64-bit ids (members, clusters, leases, sessions) are hex strings as the text output shows
//! them; revisions, zxids, versions and counts are numbers.

use std::fmt::Write as _;
use std::io::Write as _;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::CliError;
use crate::pb::corral::v1::Stat;
use crate::pb::etcdserverpb::ResponseHeader;
use crate::pb::mvccpb::KeyValue;

/// `--write-out`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// zkCli's and etcdctl's own text output.
    #[default]
    Simple,
    /// Aligned columns with a header (streamed output stays simple lines).
    Table,
    /// One JSON document per result (per event for streams).
    Json,
}

/// Writes `text` to stdout and flushes: a closed pipe (`| head`) ends the command quietly
/// instead of panicking as `println!` would.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                CliError::quiet()
            } else {
                CliError::new(format!("writing output: {e}"))
            }
        })
}

/// Writes raw bytes (znode data, values) followed by a newline.
pub fn emit_bytes(bytes: &[u8]) -> Result<(), CliError> {
    let mut buf = bytes.to_vec();
    buf.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&buf).and_then(|()| out.flush()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::quiet()
        } else {
            CliError::new(format!("writing output: {e}"))
        }
    })
}

/// One JSON document on its own line.
pub fn emit_json(v: &Value) -> Result<(), CliError> {
    emit(&format!("{v}\n"))
}

/// Bytes as text for the simple and table outputs (lossy: control bytes stay as they are).
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Inserts `name` as a string (or base64 with `<name>_encoding: "base64"`).
pub fn put_bytes(obj: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => {
            obj.insert(name.into(), Value::String(s.to_string()));
        }
        Err(_) => {
            obj.insert(
                name.into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            );
            obj.insert(format!("{name}_encoding"), Value::String("base64".into()));
        }
    }
}

pub fn hex_id(id: u64) -> String {
    format!("{id:x}")
}

pub fn header_json(h: Option<&ResponseHeader>) -> Value {
    let h = h.cloned().unwrap_or_default();
    json!({
        "cluster_id": hex_id(h.cluster_id),
        "member_id": hex_id(h.member_id),
        "revision": h.revision,
        "raft_term": h.raft_term,
    })
}

pub fn kv_json(kv: &KeyValue) -> Value {
    let mut o = Map::new();
    put_bytes(&mut o, "key", &kv.key);
    put_bytes(&mut o, "value", &kv.value);
    o.insert("create_revision".into(), kv.create_revision.into());
    o.insert("mod_revision".into(), kv.mod_revision.into());
    o.insert("version".into(), kv.version.into());
    o.insert("lease".into(), hex_id(kv.lease as u64).into());
    Value::Object(o)
}

pub fn stat_json(s: &Stat) -> Value {
    json!({
        "czxid": s.czxid,
        "mzxid": s.mzxid,
        "pzxid": s.pzxid,
        "ctime": s.ctime,
        "mtime": s.mtime,
        "version": s.version,
        "cversion": s.cversion,
        "aversion": s.aversion,
        "ephemeral_owner": format!("0x{:x}", s.ephemeral_owner),
        "data_length": s.data_length,
        "num_children": s.num_children,
    })
}

/// zkCli's stat block, field for field.
pub fn stat_text(s: &Stat) -> String {
    format!(
        "cZxid = 0x{:x}\nctime = {}\nmZxid = 0x{:x}\nmtime = {}\npZxid = 0x{:x}\n\
         cversion = {}\ndataVersion = {}\naclVersion = {}\nephemeralOwner = 0x{:x}\n\
         dataLength = {}\nnumChildren = {}\n",
        s.czxid,
        java_date(s.ctime),
        s.mzxid,
        java_date(s.mtime),
        s.pzxid,
        s.cversion,
        s.version,
        s.aversion,
        s.ephemeral_owner,
        s.data_length,
        s.num_children
    )
}

/// The stat as (field, value) rows, zkCli's names, for tables.
pub fn stat_rows(s: &Stat) -> Vec<Vec<String>> {
    stat_text(s)
        .lines()
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| vec![k.to_string(), v.to_string()])
        .collect()
}

/// Milliseconds since the epoch as Java's `Date.toString()` prints them in UTC (zkCli shows
/// times that way): `Thu Nov 21 10:04:05 UTC 2024`.
pub fn java_date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let weekday = WEEKDAYS[days.rem_euclid(7) as usize];
    let month = MONTHS[(m - 1).clamp(0, 11) as usize];
    format!(
        "{weekday} {month} {d:02} {:02}:{:02}:{:02} UTC {y}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil: (year, month 1..=12, day 1..=31) of a day count since
/// 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// An etcdctl-style ASCII table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let rule = {
        let mut s = String::from("+");
        for w in &widths {
            s.push_str(&"-".repeat(w + 2));
            s.push('+');
        }
        s.push('\n');
        s
    };
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, w) in widths.iter().enumerate() {
            let cell = cells.get(i).map(String::as_str).unwrap_or("");
            let pad = w - cell.chars().count();
            let _ = write!(s, " {cell}{} |", " ".repeat(pad));
        }
        s.push('\n');
        s
    };
    let mut out = rule.clone();
    out.push_str(&line(
        &header.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    ));
    out.push_str(&rule);
    for row in rows {
        out.push_str(&line(row));
    }
    out.push_str(&rule);
    out
}

/// Table cells must stay on one line.
pub fn cell(bytes: &[u8]) -> String {
    text(bytes).replace(['\n', '\r'], " ")
}

/// `20 kB`, as etcdctl prints database sizes.
pub fn human_bytes(n: i64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.0} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_print_as_java_does() {
        assert_eq!(java_date(0), "Thu Jan 01 00:00:00 UTC 1970");
        assert_eq!(java_date(1_732_183_445_000), "Thu Nov 21 10:04:05 UTC 2024");
        assert_eq!(java_date(951_782_400_000), "Tue Feb 29 00:00:00 UTC 2000");
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(
            t,
            "+-----+----+\n| A   | BB |\n+-----+----+\n| xyz | 1  |\n+-----+----+\n"
        );
    }

    #[test]
    fn bytes_in_json() {
        let mut o = Map::new();
        put_bytes(&mut o, "value", b"hi");
        put_bytes(&mut o, "key", &[0xff, 0x00]);
        assert_eq!(
            Value::Object(o),
            json!({"value": "hi", "key": "/wA=", "key_encoding": "base64"})
        );
        assert_eq!(human_bytes(20_480), "20 kB");
        assert_eq!(human_bytes(12), "12 B");
    }
}
