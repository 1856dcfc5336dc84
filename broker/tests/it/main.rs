//! Tests of the `streambus` binary that need nothing but the binary itself.
//!
//! This target also makes a workspace-wide `cargo test` / `cargo nextest run` build the
//! `streambus` binary (cargo builds a package's binaries only for its own integration tests),
//! which the `streambus-integration-tests` crate runs.

mod tidy;

use std::process::Command;

#[test]
fn version_flag_prints_the_package_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_streambus"))
        .arg("--version")
        .output()
        .expect("streambus runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("streambus {}", env!("CARGO_PKG_VERSION"))
    );
}
