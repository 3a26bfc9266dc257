//! Protobuf types and gRPC service stubs generated from `proto/` by `build.rs`.
//!
//! The `etcd/*` protos reproduce etcd's v3 wire API (package names, field
//! numbers, streaming shapes), so stock etcd clients work against our server.
//! Each proto package becomes one module here; generated code refers to other
//! packages through `super::<package>`, so the modules must stay siblings.
//!
//! Every generated message and enum (including oneof enums) also derives
//! `serde::Serialize`/`Deserialize`, so the types can be embedded in
//! replicated commands and snapshots.

/// Storage records: `KeyValue` and watch `Event`s (proto package `mvccpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// The etcd v3 services KV, Watch, Lease, Cluster and Maintenance with their
/// messages (proto package `etcdserverpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// The etcd Election service (proto package `v3electionpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// The etcd Lock service (proto package `v3lockpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

// Our own APIs: `build.rs` compiles every file under `proto/`, so once
// `proto/corral/v1/*.proto` (proto package `corral.v1`) exists, expose it here
// as a nested module with the same allowances:
//
//     #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
//     pub mod corral {
//         pub mod v1 {
//             tonic::include_proto!("corral.v1");
//         }
//     }
//
// Generated code in `corral.v1` that uses etcd types refers to them as
// `super::super::etcdserverpb::...`, which resolves because `corral` is a
// sibling of the modules above.

/// corral's own packages.
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod corral {
    /// Member-to-member service on the peer port (never exposed to clients).
    /// The native API: znodes, sessions, znode watches.
    pub mod v1 {
        tonic::include_proto!("corral.v1");
    }
    /// Member-to-member service on the peer port (never exposed to clients).
    pub mod peer {
        pub mod v1 {
            tonic::include_proto!("corral.peer.v1");
        }
    }
}

/// Encoded `FileDescriptorSet` of every compiled proto file, for gRPC server
/// reflection (`tonic_reflection`).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("corral_descriptor");
