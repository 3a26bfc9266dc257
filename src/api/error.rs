//! The one place where domain errors become gRPC statuses. Codes and message texts are etcd's:
//! etcd clients map errors by their message.

use tonic::{Code, Status};

use crate::mvcc::MvccError;
use crate::raft::handle::ProposeError;

pub fn mvcc_status(e: MvccError) -> Status {
    let code = match &e {
        MvccError::Compacted | MvccError::FutureRevision | MvccError::LeaseTtlTooLarge => {
            Code::OutOfRange
        }
        MvccError::LeaseNotFound => Code::NotFound,
        MvccError::NoSpace => Code::ResourceExhausted,
        MvccError::LeaseExists => Code::FailedPrecondition,
        MvccError::KeyNotFound
        | MvccError::EmptyKey
        | MvccError::ValueProvided
        | MvccError::LeaseProvided
        | MvccError::TooManyOps
        | MvccError::DuplicateKey
        | MvccError::InvalidSortOption
        | MvccError::RequestTooLarge
        | MvccError::ReservedKey => Code::InvalidArgument,
        MvccError::Storage(_) | MvccError::Corrupt(_) => {
            // The detail goes to the log, not to the client.
            tracing::error!(error = %e, "storage failure while serving a request");
            return Status::internal("etcdserver: internal storage error");
        }
    };
    Status::new(code, e.to_string())
}

pub fn propose_status(e: ProposeError) -> Status {
    Status::unavailable(e.to_string())
}

/// For RPCs whose capability belongs to a later milestone.
pub fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("corral: {what} is not implemented yet"))
}
