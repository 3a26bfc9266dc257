//! The Raft state machine: applies committed entries to the MVCC store, atomically with the
//! last-applied log id, and builds / installs snapshots.

// openraft's StorageError is large; it is what every storage trait method returns, so helpers
// share its shape rather than boxing it.
#![allow(clippy::result_large_err)]

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use super::types::{
    Entry, LogId, Proposal, ProposalResult, Snapshot, SnapshotMeta, StorageError, StoredMembership,
    TypeConfig,
};
use crate::command::{Command, CommandResult};
use crate::lease::{self, clock::LeaseClock};
use crate::mvcc::{MvccError, Writer};
use crate::pb::etcdserverpb::{AlarmMember, AlarmType};
use crate::storage::state::{self as state_store, meta, StateStore};
use crate::watch::WatchHub;

/// A snapshot as stored on disk: the meta first, so it can be read without the data.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

pub struct StateMachine {
    store: Arc<StateStore>,
    applied: Option<LogId>,
    membership: StoredMembership,
    /// Meta of the latest snapshot, which is in `snapshot_path` (so a restarted member can
    /// still send it to a lagging follower). Only the meta stays in memory: the data, as large
    /// as the whole state, is read back from the file in the rare case a follower needs it.
    /// Held while the file is written or read, so that writers don't interleave.
    current: Arc<Mutex<Option<SnapshotMeta>>>,
    snapshot_path: PathBuf,
    /// Told about every applied batch's events, after they are committed.
    watch: WatchHub,
    /// Told about every lease granted or revoked, after it is committed.
    leases: Arc<LeaseClock>,
    /// The raised alarms as applied so far (the store publishes them after each commit).
    alarms: Alarms,
}

/// The applied alarm list. A NOSPACE alarm refuses writes that need space *at apply*, so
/// every member refuses the same commands whatever its own disk usage.
#[derive(Default)]
struct Alarms {
    list: Vec<AlarmMember>,
    /// Changed by the batch being applied: the store publishes the list after the commit.
    changed: bool,
}

impl Alarms {
    fn nospace(&self) -> bool {
        self.list
            .iter()
            .any(|a| a.alarm == AlarmType::Nospace as i32)
    }

    /// etcd's alarm store: raising returns the alarm (also if it was already raised);
    /// clearing returns what it removed. `member_id` 0 clears the alarm of every member.
    fn apply(&mut self, activate: bool, member_id: u64, alarm: i32) -> Vec<AlarmMember> {
        if alarm == AlarmType::None as i32 {
            return Vec::new();
        }
        if activate {
            let raised = AlarmMember { member_id, alarm };
            if !self.list.contains(&raised) {
                self.list.push(raised);
                self.list.sort_by_key(|a| (a.member_id, a.alarm));
                self.changed = true;
            }
            return vec![raised];
        }
        let (cleared, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|a| a.alarm == alarm && (member_id == 0 || a.member_id == member_id));
        self.list = kept;
        self.changed |= !cleared.is_empty();
        cleared
    }
}

/// A lease change to report to the clock once its batch is committed.
enum LeaseChange {
    Granted(i64, i64),
    Revoked(i64),
}

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

fn decode_meta<T: for<'de> Deserialize<'de>>(
    store: &StateStore,
    name: &[u8],
) -> Result<Option<T>, StorageError> {
    match store.read_meta(name).map_err(sm_read_err)? {
        None => Ok(None),
        Some(bytes) => bincode::deserialize(&bytes)
            .map(Some)
            .map_err(|e| sm_read_err(*e)),
    }
}

impl StateMachine {
    pub fn open(
        store: Arc<StateStore>,
        snapshot_path: &Path,
        watch: WatchHub,
        leases: Arc<LeaseClock>,
    ) -> Result<StateMachine, StorageError> {
        // The meta is the file's prefix: read only that.
        let current = match std::fs::File::open(snapshot_path) {
            Ok(file) => Some(
                bincode::deserialize_from::<_, SnapshotMeta>(io::BufReader::new(file))
                    .map_err(|e| StorageError::from(StorageIOError::read_snapshot(None, &*e)))?,
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(StorageIOError::read_snapshot(None, &e).into()),
        };
        if store.torn() {
            rebuild(&store, snapshot_path, current.as_ref())?;
        }
        // Plain writes only once something can rebuild the state (see `storage::state`): a
        // snapshot, or a log that produced all of it (every store but a restored backup's).
        store.set_atomic_commits(current.is_none() && store.restored());
        leases.reload(&lease::all(&store.backend()).map_err(sm_read_err)?);
        let applied = decode_meta::<Option<LogId>>(&store, meta::APPLIED)?.flatten();
        let membership = decode_meta(&store, meta::MEMBERSHIP)?.unwrap_or_default();
        let alarms = Alarms {
            list: store.alarms(),
            changed: false,
        };
        Ok(StateMachine {
            alarms,
            store,
            applied,
            membership,
            current: Arc::new(Mutex::new(current)),
            snapshot_path: snapshot_path.to_path_buf(),
            watch,
            leases,
        })
    }

    pub fn store(&self) -> &Arc<StateStore> {
        &self.store
    }
}

/// Applies one command. Refusals (bad revision, unknown lease, ...) become results; only a
/// storage failure is an error, and it stops the member.
fn apply_command<B: crate::mvcc::Backend>(
    w: &mut Writer<'_, B>,
    cmd: &Command,
    changes: &mut Vec<LeaseChange>,
    alarms: &mut Alarms,
) -> Result<CommandResult, StorageError> {
    // etcd's "capped" applier: while the space quota is exceeded, what could grow the store
    // is refused; deletes and compaction still apply, so space can be freed.
    if alarms.nospace() && cmd.needs_space() {
        return Ok(CommandResult::Error(MvccError::NoSpace));
    }
    let result = match cmd {
        Command::Put(r) => w.put(r).map(CommandResult::Put),
        Command::DeleteRange(r) => w.delete_range(r).map(CommandResult::DeleteRange),
        Command::Txn(r) => w.txn(r).map(CommandResult::Txn),
        Command::Compact(r) => w.compact(r).map(CommandResult::Compact),
        Command::PublishMember { id, client_urls } => {
            let bytes = bincode::serialize(client_urls).map_err(|e| sm_write_err(*e))?;
            w.view_mut().insert(
                state_store::meta_key(&state_store::member_attr_name(*id)),
                bytes,
            );
            Ok(CommandResult::Done)
        }
        Command::LeaseGrant { id, ttl } => lease::grant(w, *id, *ttl).map(|()| {
            changes.push(LeaseChange::Granted(*id, *ttl));
            CommandResult::Done
        }),
        Command::LeaseRevoke { id } => lease::revoke(w, *id).map(|()| {
            changes.push(LeaseChange::Revoked(*id));
            CommandResult::Done
        }),
        Command::Znode { ops, now_ms } => {
            crate::znode::ops::apply(w, ops, *now_ms).map(CommandResult::Znode)
        }
        Command::ZnodeReap { paths, now_ms } => {
            crate::znode::ops::reap(w, paths, *now_ms).map(|_| CommandResult::Done)
        }
        Command::Alarm {
            activate,
            member_id,
            alarm,
        } => {
            let affected = alarms.apply(*activate, *member_id, *alarm);
            if alarms.changed {
                w.view_mut().insert(
                    state_store::meta_key(meta::ALARMS),
                    state_store::encode_alarms(&alarms.list),
                );
            }
            Ok(CommandResult::Alarms(affected))
        }
        Command::LeaseExpire { ids, .. } => {
            for id in ids {
                match lease::revoke(w, *id) {
                    Ok(()) | Err(MvccError::LeaseNotFound) => {
                        changes.push(LeaseChange::Revoked(*id))
                    }
                    Err(e) => return Err(sm_write_err(e)),
                }
            }
            Ok(CommandResult::Done)
        }
    };
    match result {
        Ok(r) => Ok(r),
        Err(e @ (MvccError::Storage(_) | MvccError::Corrupt(_))) => Err(sm_write_err(e)),
        Err(e) => Ok(CommandResult::Error(e)),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ProposalResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let store = self.store.clone();
        let backend = store.backend();
        let mut writer = Writer::new(&backend, store.revision(), store.compacted());
        let mut responses = Vec::new();
        let mut lease_changes = Vec::new();
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(ProposalResult::default()),
                EntryPayload::Normal(Proposal { commands }) => {
                    let mut results = Vec::with_capacity(commands.len());
                    for cmd in commands.iter() {
                        if let Command::LeaseExpire { term, .. } = cmd {
                            if *term != entry.log_id.leader_id.term {
                                // Decided by a leader of another term: see `LeaseExpire`.
                                results.push(CommandResult::Done);
                                continue;
                            }
                        }
                        results.push(apply_command(
                            &mut writer,
                            cmd,
                            &mut lease_changes,
                            &mut self.alarms,
                        )?);
                    }
                    responses.push(ProposalResult {
                        results,
                        index: entry.log_id.index,
                    });
                }
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    responses.push(ProposalResult::default());
                }
            }
        }
        let Some(last) = last else {
            return Ok(responses);
        };
        let out = writer.into_parts();
        let applied = bincode::serialize(&Some(last)).map_err(|e| sm_write_err(*e))?;
        let membership = bincode::serialize(&self.membership).map_err(|e| sm_write_err(*e))?;
        store
            .commit(
                out.writes,
                &[(meta::APPLIED, applied), (meta::MEMBERSHIP, membership)],
                out.revision,
                out.compacted,
            )
            .map_err(sm_write_err)?;
        self.applied = Some(last);
        if std::mem::take(&mut self.alarms.changed) {
            self.store.publish_alarms(self.alarms.list.clone());
        }
        for change in lease_changes {
            match change {
                LeaseChange::Granted(id, ttl) => self.leases.granted(id, ttl),
                LeaseChange::Revoked(id) => self.leases.revoked(id),
            }
        }
        self.watch.publish(out.events);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: self.store.clone(),
            current: self.current.clone(),
            snapshot_path: self.snapshot_path.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        snap_meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let records: Vec<(Vec<u8>, Vec<u8>)> = bincode::deserialize(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(snap_meta.signature()),
                &*e,
            ))
        })?;
        // `restore` flushes: openraft may purge the log right after this returns.
        self.store.restore(records).map_err(sm_write_err)?;
        self.applied = snap_meta.last_log_id;
        self.membership = snap_meta.last_membership.clone();
        self.alarms = Alarms {
            list: self.store.alarms(),
            changed: false,
        };
        {
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            persist_snapshot(&self.snapshot_path, snap_meta, &data)?;
            *current = Some(snap_meta.clone());
        }
        self.store.set_atomic_commits(false);
        drop(data);
        // Watchers skipped the installed revisions' events: they re-read them from history.
        self.watch.resync();
        self.leases
            .reload(&lease::all(&self.store.backend()).map_err(sm_read_err)?);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let Some(meta) = current.as_ref() else {
            return Ok(None);
        };
        let stored = read_snapshot(&self.snapshot_path, meta)?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

/// Reads the snapshot file whose meta is `meta`, data included.
fn read_snapshot(path: &Path, meta: &SnapshotMeta) -> Result<StoredSnapshot, StorageError> {
    let read_err = |e: io::Error| StorageIOError::read_snapshot(Some(meta.signature()), &e);
    let file = std::fs::File::open(path).map_err(read_err)?;
    Ok(bincode::deserialize_from(io::BufReader::new(file))
        .map_err(|e| read_err(io::Error::other(e)))?)
}

/// Replaces a store that may hold part of a batch (it was not flushed clean before a crash) with
/// the state of the snapshot in `snapshot_path`, or with nothing if there is none: the log
/// then replays every entry after it. See `storage::state` for why this is needed.
fn rebuild(
    store: &StateStore,
    snapshot_path: &Path,
    current: Option<&SnapshotMeta>,
) -> Result<(), StorageError> {
    let records: Vec<(Vec<u8>, Vec<u8>)> = match current {
        Some(meta) => {
            let stored = read_snapshot(snapshot_path, meta)?;
            bincode::deserialize(&stored.data).map_err(|e| {
                StorageIOError::read_snapshot(Some(meta.signature()), &io::Error::other(e))
            })?
        }
        // Commits are atomic in a restored store until it has a snapshot, so it is never
        // torn without one; if it is, its data is gone from this disk.
        None if store.restored() => {
            return Err(sm_read_err(io::Error::other(
                "the state of this restored member is incomplete and it has no snapshot to \
                 rebuild it from",
            )))
        }
        None => Vec::new(),
    };
    tracing::warn!(
        snapshot = ?current.map(|m| &m.last_log_id),
        "the state machine was not flushed clean before this start: rebuilding it from the \
         snapshot, the log replays the rest"
    );
    store.restore(records).map_err(sm_write_err)
}

/// Writes a received snapshot's file atomically (temp file, fsync, rename) as a
/// [`StoredSnapshot`].
fn persist_snapshot(path: &Path, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
    let err = |e: io::Error| -> StorageError {
        StorageIOError::write_snapshot(Some(meta.signature()), &e).into()
    };
    let tmp = path.with_extension("tmp");
    let write = || -> io::Result<()> {
        use std::io::Write;
        let mut f = io::BufWriter::new(std::fs::File::create(&tmp)?);
        // bincode encodes a struct as its fields in order and `data: Vec<u8>` as a u64
        // length and the bytes, so this is byte for byte `bincode::serialize(&StoredSnapshot)`.
        bincode::serialize_into(&mut f, meta).map_err(io::Error::other)?;
        bincode::serialize_into(&mut f, &(data.len() as u64)).map_err(io::Error::other)?;
        f.write_all(data)?;
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        replace_durably(&tmp, path)
    };
    write().map_err(err)
}

/// Renames `tmp` over `path` and syncs the directory, so the rename survives a crash.
fn replace_durably(tmp: &Path, path: &Path) -> io::Result<()> {
    std::fs::rename(tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Where [`write_state_snapshot`] is while the store streams records to it.
struct SnapshotFile {
    out: io::BufWriter<std::fs::File>,
    meta: Option<SnapshotMeta>,
    /// Offset of the data's length prefix, written last.
    length_at: u64,
    /// Bytes of the encoded records so far.
    bytes: u64,
    records: u64,
}

/// Streams the store's state into `tmp` in the [`StoredSnapshot`] encoding and syncs it;
/// returns the snapshot's meta, read from the copied meta records. The records go to the file
/// as the store reads them, so the state is never held in memory (see
/// `StateStore::dump_to`); the data's length and record count, known only at the end, are
/// written over placeholders.
fn write_state_snapshot(store: &StateStore, tmp: &Path) -> io::Result<SnapshotMeta> {
    use std::io::{Seek, SeekFrom, Write};
    let encode = |e: Box<bincode::ErrorKind>| io::Error::other(e);
    let mut file = SnapshotFile {
        out: io::BufWriter::new(std::fs::File::create(tmp)?),
        meta: None,
        length_at: 0,
        bytes: 0,
        records: 0,
    };
    store.dump_to(
        &mut file,
        |file, in_place| {
            let find = |name: &[u8]| {
                let key = state_store::meta_key(name);
                in_place.iter().find(|r| r.0 == key).map(|r| &r.1)
            };
            let last_log_id: Option<LogId> = match find(meta::APPLIED) {
                Some(b) => bincode::deserialize(b).map_err(encode)?,
                None => None,
            };
            let last_membership: StoredMembership = match find(meta::MEMBERSHIP) {
                Some(b) => bincode::deserialize(b).map_err(encode)?,
                None => StoredMembership::default(),
            };
            let revision = find(meta::REVISION)
                .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
                .map_or(crate::mvcc::INITIAL_REVISION, i64::from_be_bytes);
            let snapshot_id = match last_log_id {
                Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, revision),
                None => format!("empty-{revision}"),
            };
            let meta = SnapshotMeta {
                last_log_id,
                last_membership,
                snapshot_id,
            };
            bincode::serialize_into(&mut file.out, &meta).map_err(encode)?;
            file.length_at = bincode::serialized_size(&meta).map_err(encode)?;
            // Placeholders: the data's length, then (inside the data) the record count.
            bincode::serialize_into(&mut file.out, &0u64).map_err(encode)?;
            bincode::serialize_into(&mut file.out, &0u64).map_err(encode)?;
            file.meta = Some(meta);
            Ok(())
        },
        |file, k, v| {
            // A `(Vec<u8>, Vec<u8>)` in bincode: each a u64 length and the bytes.
            bincode::serialize_into(&mut file.out, &(k.len() as u64)).map_err(encode)?;
            file.out.write_all(k)?;
            bincode::serialize_into(&mut file.out, &(v.len() as u64)).map_err(encode)?;
            file.out.write_all(v)?;
            file.bytes += 16 + k.len() as u64 + v.len() as u64;
            file.records += 1;
            Ok(())
        },
    )?;
    let meta = file
        .meta
        .ok_or_else(|| io::Error::other("the state dump never started"))?;
    let mut out = file.out.into_inner().map_err(|e| e.into_error())?;
    out.seek(SeekFrom::Start(file.length_at))?;
    // The data is the record count (8 bytes) and the records.
    bincode::serialize_into(&mut out, &(8 + file.bytes)).map_err(encode)?;
    bincode::serialize_into(&mut out, &file.records).map_err(encode)?;
    out.sync_all()?;
    Ok(meta)
}

pub struct SnapshotBuilder {
    store: Arc<StateStore>,
    current: Arc<Mutex<Option<SnapshotMeta>>>,
    snapshot_path: PathBuf,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Its own temporary name: openraft may install a received snapshot meanwhile.
        let tmp = self.snapshot_path.with_extension("building");
        let snap_meta = write_state_snapshot(&self.store, &tmp).map_err(sm_read_err)?;
        // The state up to this snapshot must be durable before openraft purges the log it was
        // built from; the state machine does not flush on every apply.
        self.store.flush().await.map_err(sm_write_err)?;
        {
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            replace_durably(&tmp, &self.snapshot_path).map_err(|e| {
                StorageError::from(StorageIOError::write_snapshot(
                    Some(snap_meta.signature()),
                    &e,
                ))
            })?;
            *current = Some(snap_meta.clone());
        }
        // The state can now be rebuilt from this file: see `storage::state`.
        self.store.set_atomic_commits(false);
        // The data is in the file only. openraft (=0.9.25, pinned) keeps nothing of a built
        // snapshot but its meta (core/sm/worker.rs `build_snapshot`, storage/helper.rs); when
        // a follower needs the data, `get_current_snapshot` reads it from the file. Encoding
        // it here too would hold a second copy of the whole state at the peak.
        Ok(Snapshot {
            meta: snap_meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}
