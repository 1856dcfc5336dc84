//! [`BrokerProcess`]: a long-running `streambus` child whose log lines a test can wait for, stop
//! with SIGTERM like systemd does, or kill. Dropping it kills the process, so a failing test
//! never leaves a broker behind.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::streambus_command;

const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running `streambus`.
#[derive(Debug)]
pub struct BrokerProcess {
    child: Child,
    /// Every stderr line so far (the broker logs to stderr).
    log: Arc<Mutex<Vec<String>>>,
}

impl BrokerProcess {
    /// Starts `streambus` with `args`.
    pub fn start(args: &[&str]) -> anyhow::Result<BrokerProcess> {
        BrokerProcess::start_with_env(args, &[])
    }

    /// Starts `streambus` with `args` and these environment variables set (`FAILPOINTS`, for
    /// fault injection).
    pub fn start_with_env(
        args: &[&str],
        env: &[(String, String)],
    ) -> anyhow::Result<BrokerProcess> {
        let mut command: Command = streambus_command()?;
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("cannot start streambus")?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().context("stderr is piped")?;
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Ok(BrokerProcess { child, log })
    }

    /// The process id, e.g. to send it signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The whole log so far, for failure messages.
    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// Waits up to `timeout` for the `nth` (0-based) log line containing `needle`.
    pub fn wait_for_log(
        &mut self,
        needle: &str,
        nth: usize,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = {
                let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
                log.iter()
                    .filter(|line| line.contains(needle))
                    .nth(nth)
                    .cloned()
            };
            if let Some(line) = found {
                return Ok(line);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "streambus exited ({status}) before logging {needle:?}:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "no {needle:?} in the log after {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The exit status if the process has exited, without waiting.
    pub fn exit_status(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        Ok(self.child.try_wait()?)
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit.
    pub fn terminate(mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.pid());
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "streambus still running {timeout:?} after SIGTERM:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }
}

impl BrokerProcess {
    /// SIGKILL, as a crash: no shutdown work happens. Waits for the exit.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) without waiting.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .context("cannot run kill")?;
        if !status.success() {
            bail!("kill -{signal} {} failed", self.pid());
        }
        Ok(())
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        // Already exited is fine; otherwise this is the SIGKILL of a failed test.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
