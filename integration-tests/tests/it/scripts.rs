//! Running the third-party client scripts (`integration-tests/python/`, `integration-tests/node/`)
//! against a dev broker: shared by `compat` and `groups`. `scripts/bootstrap.sh` (run by `make
//! test`) installs the clients; a missing one fails the test rather than skipping it.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use streambus_integration_tests::{run_with_timeout, DevBroker};

/// Bound on one client script (each of its own waits is bounded too, and the scripts kill
/// themselves after `STREAMBUS_TEST_TIMEOUT_S`, 540 s by default).
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(600);

pub fn python_dir() -> PathBuf {
    streambus_integration_tests::manifest_dir().join("python")
}

pub fn node_dir() -> PathBuf {
    streambus_integration_tests::manifest_dir().join("node")
}

/// Runs `command` with `STREAMBUS_BOOTSTRAP` pointing at `broker` and asserts that it succeeds,
/// showing its output and the tail of the broker's log if it does not.
pub fn run_script(broker: &DevBroker, mut command: Command, what: &str) {
    command.env("STREAMBUS_BOOTSTRAP", broker.bootstrap());
    let output = run_with_timeout(command, SCRIPT_TIMEOUT).expect(what);
    assert!(
        output.status.success(),
        "{what} failed ({})\n--- stdout\n{}\n--- stderr\n{}\n--- broker log (tail)\n{}",
        output.status,
        output.stdout,
        output.stderr,
        tail(&broker.log_text(), 60),
    );
}

/// [`run_script`], run a second time (bounded: once) when the first run failed with a wait that
/// timed out (`timed out after`) — the symptom of a client that hangs by itself: kafka-python
/// 3.0.12 under CPU contention can leave a member thread waiting for ever on a future of its own
/// event loop (ROADMAP 3.0 has the thread dump). The first failure is printed; any other failure,
/// or a second one, fails the test.
pub fn run_script_allowing_one_client_hang(
    broker: &DevBroker,
    command: impl Fn() -> Command,
    what: &str,
) {
    let mut first = command();
    first.env("STREAMBUS_BOOTSTRAP", broker.bootstrap());
    let output = run_with_timeout(first, SCRIPT_TIMEOUT).expect(what);
    if output.status.success() {
        return;
    }
    let hung =
        output.stderr.contains("timed out after") || output.stdout.contains("timed out after");
    assert!(
        hung,
        "{what} failed ({})\n--- stdout\n{}\n--- stderr\n{}\n--- broker log (tail)\n{}",
        output.status,
        output.stdout,
        output.stderr,
        tail(&broker.log_text(), 60),
    );
    eprintln!(
        "{what}: a client wait timed out; running it once more\n--- stderr of the first run\n{}",
        tail(&output.stderr, 40)
    );
    run_script(broker, command(), what);
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `python <name>` with the project virtualenv's interpreter, for a script of `python_dir()`.
pub fn python_script(name: &str) -> Command {
    let mut command = Command::new(streambus_integration_tests::python().unwrap());
    command.arg(python_dir().join(name));
    command
}

/// `node <name>` for a script of `node_dir()`, whose `node_modules` bootstrap installs.
pub fn node_script(name: &str) -> Command {
    let installed = node_dir().join("node_modules/kafkajs/package.json");
    assert!(
        installed.is_file(),
        "{} missing: run scripts/bootstrap.sh (make test does)",
        installed.display()
    );
    let mut command = Command::new("node");
    command.arg(node_dir().join(name));
    command
}
