//! The operator files in `deploy/` against the real thing: the Prometheus config and alert
//! rules pass `promtool` (installed by `make test`), every metric they and the Grafana dashboard
//! name is one a broker exports, and `scripts/dist.sh` packs stripped binaries with them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use streambus_integration_tests::{http, run_with_timeout, DevBroker};

/// Bound on promtool, dist.sh (strip and gzip of the test build's binaries) and tar.
const TOOL_TIMEOUT: Duration = Duration::from_secs(300);
/// Consumer-lag and LSO-lag gauges are published every 15 s.
const SERIES_WAIT: Duration = Duration::from_secs(60);

fn deploy_dir() -> PathBuf {
    streambus_integration_tests::manifest_dir().join("../deploy")
}

/// promtool as `scripts/bootstrap.sh` installs it.
fn promtool() -> PathBuf {
    let tools = std::env::var_os("STREAMBUS_TOOLS").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME");
            Path::new(&home).join(".cache/streambus-tools")
        },
        PathBuf::from,
    );
    let path = tools.join("promtool");
    assert!(
        path.exists(),
        "{} is missing: run scripts/bootstrap.sh (make test does)",
        path.display()
    );
    path
}

#[test]
fn the_prometheus_config_and_alert_rules_pass_promtool() {
    let dir = deploy_dir().join("prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["check", "config", "prometheus.yml"],
    ] {
        let mut command = Command::new(promtool());
        command.args(&args).current_dir(&dir);
        let output = run_with_timeout(command, TOOL_TIMEOUT).expect("promtool");
        assert!(
            output.status.success(),
            "promtool {args:?}: {}\n{}",
            output.stdout,
            output.stderr
        );
    }
}

/// The metric names (`streambus_*`, `process_*`) a rules or dashboard file uses.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text
        .match_indices("streambus_")
        .chain(text.match_indices("process_"))
    {
        let preceded_by_word = text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if preceded_by_word {
            continue;
        }
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        names.insert(name);
    }
    names
}

/// The sample names of a text exposition.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_name_is_exported() {
    let mut wanted = BTreeSet::new();
    for file in ["prometheus/alerts.yml", "grafana/streambus-dashboard.json"] {
        let text = std::fs::read_to_string(deploy_dir().join(file)).expect("read");
        let names = names_in(&text);
        assert!(names.len() >= 5, "{file} names {names:?}");
        wanted.extend(names);
    }
    // The dashboard's `streambus_build_info` template needs the build series too.
    assert!(wanted.contains("streambus_build_info"));

    // Flushing every append: the fsync histogram exists only once a flush ran (with the
    // default policy, at a segment roll or a clean stop).
    let broker = DevBroker::start(&["--set", "log.flush_messages=1"]).expect("broker");
    // Traffic, an error, and a group's committed offset, so that every series exists.
    crate::observability::metrics_scrape(&broker, "mon", 3);
    let deadline = Instant::now() + SERIES_WAIT;
    let missing = loop {
        let (status, text) = http::get(broker.http_addr, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200);
        let exported = sample_names(&text);
        let missing: Vec<&String> = wanted.iter().filter(|n| !exported.contains(*n)).collect();
        if missing.is_empty() || Instant::now() >= deadline {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        thread::sleep(Duration::from_millis(500));
    };
    assert!(
        missing.is_empty(),
        "named in deploy/ but not exported: {missing:?}"
    );
}

#[test]
fn dist_packs_stripped_binaries_with_the_deploy_files() {
    let bin_dir = streambus_integration_tests::streambus_bin()
        .expect("streambus")
        .parent()
        .expect("its directory")
        .to_path_buf();
    let out = tempfile::tempdir().expect("tempdir");
    let mut command =
        Command::new(streambus_integration_tests::manifest_dir().join("../scripts/dist.sh"));
    command.arg(&bin_dir).arg(out.path());
    let output = run_with_timeout(command, TOOL_TIMEOUT).expect("dist.sh");
    assert!(
        output.status.success(),
        "dist.sh: {}\n{}",
        output.stdout,
        output.stderr
    );
    assert!(output.stdout.contains(".tar.gz ("), "{}", output.stdout);
    let tarballs: Vec<PathBuf> = std::fs::read_dir(out.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .collect();
    let main = tarballs
        .iter()
        .find(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".tar.gz") && !name.ends_with("-debug.tar.gz")
        })
        .expect("the tarball");
    let debug = tarballs
        .iter()
        .find(|p| p.to_string_lossy().ends_with("-debug.tar.gz"))
        .unwrap_or_else(|| panic!("no debug tarball in {tarballs:?}"));
    let unpacked = tempfile::tempdir().expect("tempdir");
    let mut tar = Command::new("tar");
    tar.arg("-xzf").arg(main).arg("-C").arg(unpacked.path());
    let untarred = run_with_timeout(tar, TOOL_TIMEOUT).expect("tar");
    assert!(untarred.status.success(), "{}", untarred.stderr);
    let root = std::fs::read_dir(unpacked.path())
        .expect("list")
        .next()
        .expect("one directory")
        .expect("entry")
        .path();
    for file in [
        "bin/streambus",
        "bin/sbctl",
        "config/broker-1.toml",
        "systemd/streambus.service",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "grafana/streambus-dashboard.json",
        "README.md",
    ] {
        assert!(root.join(file).exists(), "{file} missing from the tarball");
    }
    // The debug tarball unpacked over the same place puts each binary's debug info beside it.
    let mut tar = Command::new("tar");
    tar.arg("-xzf").arg(debug).arg("-C").arg(unpacked.path());
    let untarred = run_with_timeout(tar, TOOL_TIMEOUT).expect("tar");
    assert!(untarred.status.success(), "{}", untarred.stderr);
    for file in ["bin/streambus.debug", "bin/sbctl.debug"] {
        assert!(root.join(file).exists(), "{file} not beside its binary");
    }
    let packed = std::fs::metadata(root.join("bin/streambus"))
        .expect("size")
        .len();
    let built = std::fs::metadata(bin_dir.join("streambus"))
        .expect("size")
        .len();
    assert!(packed < built, "not stripped: {packed} >= {built}");
    let version = run_with_timeout(
        {
            let mut c = Command::new(root.join("bin/streambus"));
            c.arg("--version");
            c
        },
        TOOL_TIMEOUT,
    )
    .expect("--version");
    assert!(version.status.success() && version.stdout.starts_with("streambus "));
}
