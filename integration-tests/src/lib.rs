//! End-to-end tests of StreamBus: they start real `streambus` processes and drive them from the
//! outside, the way operators and Kafka clients do.
//!
//! Owns: helpers to find and run the built broker binary; the tests live in `tests/it/`.
//! Must not: link the broker as a library to reach its internals, or be skipped in CI.
//!
//! The binary is found next to the test executable: cargo puts test executables in
//! `<target>/<profile>/deps/` and binaries in `<target>/<profile>/`. A workspace-wide
//! `cargo test` or `cargo nextest run` builds it first (the broker package's own integration
//! test makes cargo build its binary); with `-p streambus-integration-tests` alone, build it
//! with `cargo build -p streambus-broker` first.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub mod cluster;
pub mod http;
pub mod kafka;
mod process;

pub use cluster::Cluster;
pub use kafka::{DevBroker, KafkaConn};
pub use process::BrokerProcess;

/// How long a short command (`--print-config`, a failed start) may run before it is killed.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a running child is checked for exit while waiting.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// This crate's directory (its `python/` and `node/` scripts, the workspace beside it), as the
/// running test sees it: cargo and nextest set `CARGO_MANIFEST_DIR` for every test process. The
/// path compiled in is only a fallback: a test binary reused from a build of the same sources
/// at another path (a target directory shared between checkouts) would point there.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// Path of the `streambus` binary built alongside the running test.
pub fn streambus_bin() -> anyhow::Result<PathBuf> {
    workspace_bin("streambus", "streambus-broker")
}

/// Path of the `sbctl` binary built alongside the running test.
pub fn sbctl_bin() -> anyhow::Result<PathBuf> {
    workspace_bin("sbctl", "streambus-client")
}

/// A binary of this workspace, next to the test executable's `deps` directory.
fn workspace_bin(name: &str, package: &str) -> anyhow::Result<PathBuf> {
    let test_exe = std::env::current_exe().context("cannot locate the test executable")?;
    let profile_dir = test_exe
        .parent()
        .filter(|deps| deps.ends_with("deps"))
        .and_then(|deps| deps.parent())
        .with_context(|| {
            format!(
                "test executable {} is not in a cargo `deps` directory",
                test_exe.display()
            )
        })?;
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !bin.is_file() {
        bail!(
            "{name} binary not found at {}: run `cargo build -p {package}` \
             (a workspace-wide `cargo test` or `cargo nextest run` builds it)",
            bin.display()
        );
    }
    Ok(bin)
}

/// An `sbctl` command talking to `bootstrap`, with no `STREAMBUS_*` variables inherited.
pub fn sbctl_command(bootstrap: &str) -> anyhow::Result<Command> {
    let mut command = Command::new(sbctl_bin()?);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("STREAMBUS_") {
            command.env_remove(name);
        }
    }
    command.arg("--bootstrap-server").arg(bootstrap);
    Ok(command)
}

/// The project virtualenv's Python, which has the third-party Kafka clients
/// (`scripts/bootstrap.sh` builds it; `STREAMBUS_VENV` overrides where).
pub fn python() -> anyhow::Result<PathBuf> {
    let venv = match std::env::var_os("STREAMBUS_VENV") {
        Some(venv) => PathBuf::from(venv),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/streambus-venv"),
    };
    let python = venv.join("bin/python");
    if !python.exists() {
        bail!(
            "{} missing: run scripts/bootstrap.sh (make test does)",
            python.display()
        );
    }
    Ok(python)
}

/// What a finished process printed and how it exited.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A `streambus` command with no `STREAMBUS_*` variables inherited from the test's environment:
/// the broker reads them as config, and a developer's shell must not change test results.
pub fn streambus_command() -> anyhow::Result<Command> {
    let mut command = Command::new(streambus_bin()?);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("STREAMBUS_") {
            command.env_remove(name);
        }
    }
    Ok(command)
}

/// Runs `streambus` with `args` to completion, killing it after [`COMMAND_TIMEOUT`].
pub fn run_streambus(args: &[&str]) -> anyhow::Result<Output> {
    let mut command = streambus_command()?;
    command.args(args);
    run_with_timeout(command, COMMAND_TIMEOUT)
}

/// A new cluster id from `streambus --new-cluster-id`, for a cluster a test starts.
pub fn new_cluster_id() -> anyhow::Result<String> {
    let output = run_streambus(&["--new-cluster-id"])?;
    anyhow::ensure!(
        output.status.success(),
        "streambus --new-cluster-id failed: {}",
        output.stderr
    );
    Ok(output.stdout.trim().to_owned())
}

/// Runs `command` to completion with captured output, killing it after `timeout`.
pub fn run_with_timeout(mut command: Command, timeout: Duration) -> anyhow::Result<Output> {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {description}"))?;
    // Drain both pipes while waiting, so a chatty child never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let status = wait_with_deadline(&mut child, Instant::now() + timeout)
        .with_context(|| format!("waiting for {description}"))?;
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "{description} still running after {timeout:?}; killed it.\n\
             stdout:\n{stdout}\nstderr:\n{stderr}"
        ),
    }
}

/// Waits for `child` to exit until `deadline`; kills and reaps it when the deadline passes.
fn wait_with_deadline(child: &mut Child, deadline: Instant) -> anyhow::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            // The child may exit between the check and the kill; reaping covers both cases.
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            // Lossy on purpose: a test should see garbage output, not fail to read it.
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_that_outlives_its_timeout_is_killed() {
        let mut command = Command::new("sleep");
        command.arg("30");
        let started = Instant::now();
        let error = run_with_timeout(command, Duration::from_millis(200)).expect_err("times out");
        assert!(error.to_string().contains("still running"), "{error:#}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn output_and_exit_status_are_captured() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2; exit 3"]);
        let output = run_with_timeout(command, COMMAND_TIMEOUT).expect("runs");
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(output.stdout, "out\n");
        assert_eq!(output.stderr, "err\n");
    }
}
