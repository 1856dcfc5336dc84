//! Compiles the `.proto` files into Rust at build time with protox (a pure-Rust protobuf
//! compiler), so no system `protoc` is needed on any machine that builds StreamBus.

use std::error::Error;

/// Every service file; their imports are found under `INCLUDE_DIR`.
const PROTO_FILES: &[&str] = &[
    "proto/streambus/admin/v1/admin.proto",
    "proto/streambus/raft/v1/raft.proto",
];
const INCLUDE_DIR: &str = "proto";
const ADMIN_PROTO: &str = "proto/streambus/admin/v1/admin.proto";
/// Written to `OUT_DIR`; `lib.rs` includes it.
const ADMIN_DESCRIPTOR_FILE: &str = "admin_descriptor.bin";

fn main() -> Result<(), Box<dyn Error>> {
    // The generator learns of no paths when fed a descriptor set, so it cannot emit these itself.
    // A directory is scanned recursively by cargo, which also covers newly added files.
    println!("cargo:rerun-if-changed={INCLUDE_DIR}");
    println!("cargo:rerun-if-changed=build.rs");

    let fds = protox::compile(PROTO_FILES, [INCLUDE_DIR])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    // The admin API's descriptors, for server reflection (the raft transport is not offered
    // on the admin listener, so it is left out).
    let admin = protox::compile([ADMIN_PROTO], [INCLUDE_DIR])?;
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join(ADMIN_DESCRIPTOR_FILE),
        prost::Message::encode_to_vec(&admin),
    )?;
    Ok(())
}
