//! Compiles every `.proto` file under `proto/` into Rust (prost messages plus
//! tonic clients and servers) and writes a file descriptor set for gRPC server
//! reflection.
//!
//! protoc comes from the `protoc-bin-vendored` crate, so nothing has to be
//! installed on the build machine.

use std::io;
use std::path::{Path, PathBuf};

/// Root of all proto sources; also the only include path, so imports are
/// written relative to it (e.g. `import "etcd/mvccpb/kv.proto";`).
const PROTO_ROOT: &str = "proto";

/// Name of the descriptor set in `OUT_DIR`, loaded by `src/pb.rs` through
/// `tonic::include_file_descriptor_set!("corral_descriptor")`.
const DESCRIPTOR_FILE: &str = "corral_descriptor.bin";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Cargo rescans the whole directory, so added, edited or removed proto
    // files all trigger a rebuild.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // Build scripts run single-threaded at this point, and in edition 2021
    // `set_var` is a safe function.
    std::env::set_var("PROTOC", protoc);

    let mut protos = Vec::new();
    collect_protos(Path::new(PROTO_ROOT), &mut protos)?;
    // Deterministic order keeps generated output and descriptor set stable.
    protos.sort();

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Every message, enum and oneof enum gets serde support: replicated
        // commands embed these types and are encoded with bincode.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .file_descriptor_set_path(out_dir.join(DESCRIPTOR_FILE))
        .compile_protos(&protos, &[PathBuf::from(PROTO_ROOT)])?;

    Ok(())
}

/// Appends every `*.proto` file below `dir` (recursively) to `out`.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
