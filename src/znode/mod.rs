//! The ZooKeeper-style namespace on the flat key space.
//!
//! Every znode is one key under [`ZNODE_PREFIX`]: the prefix, the path's depth as two bytes,
//! then the path. Siblings therefore share a key prefix (`prefix ++ depth+1 ++ parent/`), so
//! `getChildren` is one prefix scan. The value is a [`Record`]: data plus ZooKeeper's stat.
//! A znode operation becomes one MVCC txn (see [`ops`]): the znode and its parent's counters
//! change in the same revision, and a zxid is that revision.

pub mod ops;

use serde::{Deserialize, Serialize};

use crate::pb::corral::v1::Stat;

/// Keys of the znode tree. The etcd API may read them but never write them.
pub const ZNODE_PREFIX: &[u8] = b"\x00zk/";

/// ZooKeeper's default limit on znode data (jute.maxbuffer), 1 MiB.
pub const MAX_DATA: usize = 1024 * 1024;

/// ZooKeeper's error conditions. `Display` is "Name: detail".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum ZkError {
    #[error("NoNode: {0}")]
    NoNode(String),
    #[error("NodeExists: {0}")]
    NodeExists(String),
    #[error("BadVersion: {0}")]
    BadVersion(String),
    #[error("NotEmpty: {0}")]
    NotEmpty(String),
    #[error("NoChildrenForEphemerals: {0}")]
    NoChildrenForEphemerals(String),
    #[error("BadArguments: {0}")]
    BadArguments(String),
    #[error("SessionExpired: session {0} does not exist")]
    SessionExpired(i64),
}

impl ZkError {
    /// ZooKeeper's name for the condition, as clients match on it.
    pub fn name(&self) -> &'static str {
        match self {
            ZkError::NoNode(_) => "NoNode",
            ZkError::NodeExists(_) => "NodeExists",
            ZkError::BadVersion(_) => "BadVersion",
            ZkError::NotEmpty(_) => "NotEmpty",
            ZkError::NoChildrenForEphemerals(_) => "NoChildrenForEphemerals",
            ZkError::BadArguments(_) => "BadArguments",
            ZkError::SessionExpired(_) => "SessionExpired",
        }
    }
}

/// What kind of znode a record is (beyond its stat).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NodeKind {
    #[default]
    Persistent,
    Ephemeral,
    /// Deleted once it has had children and has none left.
    Container,
    /// Deleted when childless and unmodified for this many milliseconds.
    Ttl(i64),
}

/// One znode as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Record {
    pub data: Vec<u8>,
    pub czxid: i64,
    pub mzxid: i64,
    pub pzxid: i64,
    pub ctime: i64,
    pub mtime: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub ephemeral_owner: i64,
    pub num_children: i32,
    pub kind: NodeKind,
}

impl Record {
    pub fn stat(&self) -> Stat {
        Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            cversion: self.cversion,
            aversion: self.aversion,
            ephemeral_owner: self.ephemeral_owner,
            data_length: i32::try_from(self.data.len()).unwrap_or(i32::MAX),
            num_children: self.num_children,
            pzxid: self.pzxid,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain integers and bytes cannot fail.
        bincode::serialize(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<Record> {
        bincode::deserialize(bytes).ok()
    }
}

/// ZooKeeper's path rules: absolute, no empty, `.` or `..` component, no trailing `/`
/// (except the root), no control or reserved characters.
pub fn validate_path(path: &str) -> Result<(), ZkError> {
    let bad = |why: &str| {
        Err(ZkError::BadArguments(format!(
            "invalid path {path:?}: {why}"
        )))
    };
    if path.is_empty() {
        return bad("empty");
    }
    if !path.starts_with('/') {
        return bad("must start with '/'");
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return bad("must not end with '/'");
    }
    for c in path.chars() {
        let code = c as u32;
        if c == '\0'
            || (0x01..=0x1f).contains(&code)
            || (0x7f..=0x9f).contains(&code)
            || (0xd800..=0xf8ff).contains(&code)
            || (0xfff0..=0xffff).contains(&code)
        {
            return bad("contains a control or reserved character");
        }
    }
    for component in path[1..].split('/') {
        match component {
            "" => return bad("empty component ('//')"),
            "." | ".." => return bad("'.' and '..' are not allowed"),
            _ => {}
        }
    }
    Ok(())
}

/// The parent of a path; `None` for the root.
pub fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// The last component of a path ("" for the root).
pub fn name(path: &str) -> &str {
    path.rfind('/').map_or(path, |i| &path[i + 1..])
}

/// Components below the root: "/" is 0, "/a" is 1, "/a/b" is 2.
pub fn depth(path: &str) -> u16 {
    if path == "/" {
        0
    } else {
        u16::try_from(path.matches('/').count()).unwrap_or(u16::MAX)
    }
}

/// The key of a znode.
pub fn key(path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ZNODE_PREFIX.len() + 2 + path.len());
    k.extend_from_slice(ZNODE_PREFIX);
    k.extend_from_slice(&depth(path).to_be_bytes());
    k.extend_from_slice(path.as_bytes());
    k
}

/// The key prefix shared by every child of `path`.
pub fn children_prefix(path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(ZNODE_PREFIX.len() + 3 + path.len());
    k.extend_from_slice(ZNODE_PREFIX);
    k.extend_from_slice(&(depth(path).saturating_add(1)).to_be_bytes());
    k.extend_from_slice(path.as_bytes());
    if path != "/" {
        k.push(b'/');
    }
    k
}

/// The path a znode key holds, if it is one.
pub fn path_of(key: &[u8]) -> Option<&str> {
    let rest = key.strip_prefix(ZNODE_PREFIX)?;
    std::str::from_utf8(rest.get(2..)?).ok()
}

/// Whether `k` is in the znode key space.
pub fn is_znode_key(k: &[u8]) -> bool {
    k.starts_with(ZNODE_PREFIX)
}

/// The exclusive end of a prefix scan.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    crate::mvcc::keys::prefix_end(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules_are_zookeepers() {
        for ok in ["/", "/a", "/a/b", "/a.b/..c", "/zookeeper", "/ünï"] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "a", "/a/", "//", "/a//b", "/a/./b", "/a/..", "/.", "/a\u{0}b", "/a\u{1}",
            "/a\u{7f}",
        ] {
            assert!(
                matches!(validate_path(bad), Err(ZkError::BadArguments(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn parents_names_depths() {
        assert_eq!(parent("/"), None);
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/a/b/c"), Some("/a/b"));
        assert_eq!(name("/a/b"), "b");
        assert_eq!(name("/"), "");
        assert_eq!((depth("/"), depth("/a"), depth("/a/b")), (0, 1, 2));
    }

    #[test]
    fn children_are_one_prefix_scan() {
        let p = children_prefix("/a");
        assert!(key("/a/b").starts_with(&p));
        assert!(key("/a/zzz").starts_with(&p));
        assert!(
            !key("/a/b/c").starts_with(&p),
            "grandchildren have another depth"
        );
        assert!(!key("/ab").starts_with(&p));
        assert!(!key("/a").starts_with(&p));
        assert!(key("/x").starts_with(&children_prefix("/")));
        assert!(!key("/x/y").starts_with(&children_prefix("/")));
        assert_eq!(path_of(&key("/a/b")), Some("/a/b"));
        assert!(is_znode_key(&key("/")));
    }

    #[test]
    fn stat_reports_data_length() {
        let r = Record {
            data: vec![1, 2, 3],
            ..Default::default()
        };
        assert_eq!(r.stat().data_length, 3);
        assert_eq!(Record::decode(&r.encode()), Some(r));
    }
}
