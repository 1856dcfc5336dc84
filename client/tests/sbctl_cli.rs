//! `sbctl` argument handling without a broker. Broker-backed CLI tests are in
//! `integration-tests/tests/it/sbctl.rs`; this test also makes a workspace-wide test run build
//! the `sbctl` binary those tests run.

use std::process::Command;

fn sbctl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sbctl"))
        .args(args)
        .env_remove("STREAMBUS_BOOTSTRAP")
        .output()
        .expect("sbctl runs")
}

#[test]
fn help_lists_every_command() {
    let output = sbctl(&["--help"]);
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for command in ["topic", "produce", "consume", "cluster", "perf"] {
        assert!(text.contains(command), "{command} missing from:\n{text}");
    }
}

#[test]
fn invalid_flags_exit_2_with_a_message() {
    for args in [
        &["--bogus"][..],
        &["topic", "create"][..],
        &["topic", "create", "t", "--partitions", "many"][..],
        &["topic", "create", "t", "--config", "novalue"][..],
        &["consume", "t", "--from-beginning", "--offset", "3"][..],
        &["--output", "xml", "topic", "list"][..],
    ] {
        let output = sbctl(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stderr).contains("error"),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn an_unreachable_broker_is_one_line_and_exit_1() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let output = sbctl(&["--bootstrap-server", "127.0.0.1:1", "topic", "list"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: no broker reachable"), "{stderr}");
}
