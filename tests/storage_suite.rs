//! openraft's storage conformance suite against our real log store and state machine.

use std::sync::Arc;

use corral::raft::state_machine::StateMachine;
use corral::raft::types::{StorageError, TypeConfig};
use corral::storage::log_store::LogStore;
use corral::storage::state::StateStore;
use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageIOError;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let io = |e: std::io::Error| StorageError::from(StorageIOError::write(&e));
        let dir = tempfile::tempdir().map_err(io)?;
        let log = LogStore::open(&dir.path().join("raft-log")).map_err(io)?;
        let store = Arc::new(StateStore::open(&dir.path().join("state")).map_err(io)?);
        let sm = StateMachine::open(
            store,
            &dir.path().join("snapshot.bin"),
            corral::watch::WatchHub::default(),
            Default::default(),
        )?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite passes");
}
