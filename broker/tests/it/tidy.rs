//! Architecture rules that grep can check, in the style of rust-analyzer's `tidy.rs`.
//!
//! [`workspace_follows_the_architecture_rules`] walks every `.rs` file of the workspace
//! (skipping `vendor/`, `target` and hidden directories) and `client/Cargo.toml`, and fails
//! with one line per violation: file, line, rule and the offending code. The rules are the
//! invariants `ARCHITECTURE.md` states as absences:
//!
//! - `handler-leak`: a Kafka handler (`broker/src/kafka/handlers/**`) translates wire requests
//!   into calls on `Partition`, the ops layer and the metadata image. It names no
//!   `streambus_storage` path, no `openraft` or `rocksdb`, and from `streambus_raft` only the
//!   plain data it translates (`command`, `image`, `error` and their re-exports
//!   `MetadataCommand`, `MetadataResponse`, `Rejection`, `RaftError`, `MetadataImage`; never
//!   `store`, `network`, `node`, `controller`, `lifecycle`, `types`). It does not call `.log()`
//!   (reaching past `Partition` into its log) nor `spawn_blocking` (blocking work belongs to the
//!   partition and ops layers).
//! - `unmarked-blocking`: in `broker/src/`, only `broker/src/blocking.rs` calls tokio's
//!   `spawn_blocking`; everything else goes through `blocking::spawn`, which marks the thread so
//!   the debug check on partition log locks can tell a blocking task from a runtime worker.
//! - `rocksdb-import`: only `storage/src/kv/rocks.rs` and `raft/src/store/**` import `rocksdb`.
//! - `client-depends-on-server`: the client crate depends on none of `streambus-broker`,
//!   `streambus-storage`, `streambus-raft` (in any dependency table of `client/Cargo.toml`) and
//!   names none of them in `client/**.rs`.
//! - `impure-state-machine`: `raft/src/image/**` and coordinator state machines read no clock,
//!   draw no random number and do no I/O; time and ids come in as arguments, so every replica
//!   (and every test) replays the same records to the same state. A coordinator state machine is
//!   a file under `broker/src/coordinator/` named `machine.rs` or `*_machine.rs`, or any file
//!   there containing the marker line `// tidy: pure`, and every file of `broker/src/group/`
//!   but its service, `coordinator.rs`. Their test modules are held to the rule
//!   too: a deterministic core is tested with time passed in.
//!
//! The check is plain line matching: lines starting with `//` and trailing `// ...` comments are
//! skipped, a `use` statement is read as a whole (over several lines, braces expanded into one
//! path each) and reported at its first line. Each rule's matcher has a unit test below with a
//! line it must flag and one it must accept, so a rule cannot silently match nothing.

use std::fs;
use std::path::{Path, PathBuf};

/// This file: its unit tests spell out the very lines the rules forbid.
const THIS_FILE: &str = "broker/tests/it/tidy.rs";
/// Directory names never walked into (besides hidden ones).
const SKIPPED_DIRS: &[&str] = &["vendor", "target"];
/// Files walked at most; a bound on the walk, far above the workspace's size.
const FILES_MAX: usize = 10_000;
/// The marker comment that puts a file under `broker/src/coordinator/` under the purity rule.
const PURE_MARKER: &str = "// tidy: pure";

/// One broken rule.
#[derive(Debug)]
struct Violation {
    path: String,
    line: usize,
    rule: &'static str,
    detail: String,
    text: String,
}

/// A rule over the code lines of the files it applies to.
struct Rule {
    name: &'static str,
    applies: fn(&str, &str) -> bool,
    matcher: fn(&str) -> Option<String>,
}

const RULES: &[Rule] = &[
    Rule {
        name: "handler-leak",
        applies: is_handler,
        matcher: handler_leak,
    },
    Rule {
        name: "unmarked-blocking",
        applies: is_broker_source_but_blocking,
        matcher: unmarked_spawn_blocking,
    },
    Rule {
        name: "rocksdb-import",
        applies: may_not_import_rocksdb,
        matcher: rocksdb_import,
    },
    Rule {
        name: "client-depends-on-server",
        applies: is_client_source,
        matcher: server_crate_path,
    },
    Rule {
        name: "impure-state-machine",
        applies: is_pure_module,
        matcher: clock_or_io,
    },
];

#[test]
fn workspace_follows_the_architecture_rules() {
    // The running test's checkout (cargo sets the variable for each test process); the path
    // compiled in may be another checkout's when a shared target directory reused the binary.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).to_owned());
    let root = manifest.join("..");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    assert!(
        files.len() > 50,
        "tidy found only {} .rs files under {}",
        files.len(),
        root.display()
    );

    let mut violations = Vec::new();
    let mut files_per_rule = [0usize; RULES.len()];
    for file in &files {
        let path = relative(&root, file);
        if path == THIS_FILE {
            continue;
        }
        let source = fs::read_to_string(file).unwrap_or_else(|e| panic!("read {path}: {e}"));
        for (rule, count) in RULES.iter().zip(&mut files_per_rule) {
            *count += usize::from((rule.applies)(&path, &source));
        }
        violations.extend(check_source(&path, &source));
    }
    for (rule, count) in RULES.iter().zip(files_per_rule) {
        assert!(count > 0, "tidy rule {} applies to no file", rule.name);
    }

    let manifest_path = "client/Cargo.toml";
    let manifest = fs::read_to_string(root.join(manifest_path)).expect("read client/Cargo.toml");
    violations.extend(
        client_manifest_dependencies(&manifest)
            .into_iter()
            .map(|(line, detail)| Violation {
                path: manifest_path.to_owned(),
                line,
                rule: "client-depends-on-server",
                detail,
                text: manifest
                    .lines()
                    .nth(line - 1)
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
            }),
    );

    assert!(violations.is_empty(), "{}", report(&violations));
}

fn report(violations: &[Violation]) -> String {
    let mut out = format!(
        "tidy: {} violation(s) of the architecture rules (see ARCHITECTURE.md and the rules in {THIS_FILE}):\n",
        violations.len()
    );
    for v in violations {
        out.push_str(&format!(
            "  {}:{}: [{}] {}\n      {}\n",
            v.path, v.line, v.rule, v.detail, v.text
        ));
    }
    out
}

/// Every rule that applies to `path`, over every code line of `source`; at most one violation
/// per line and rule.
fn check_source(path: &str, source: &str) -> Vec<Violation> {
    let rules: Vec<&Rule> = RULES
        .iter()
        .filter(|rule| (rule.applies)(path, source))
        .collect();
    if rules.is_empty() {
        return Vec::new();
    }
    let mut violations = Vec::new();
    for line in code_lines(source) {
        for rule in &rules {
            if let Some(detail) = line.checked.iter().find_map(|text| (rule.matcher)(text)) {
                violations.push(Violation {
                    path: path.to_owned(),
                    line: line.number,
                    rule: rule.name,
                    detail,
                    text: line.text.clone(),
                });
            }
        }
    }
    violations
}

// ---------------------------------------------------------------------------------------------
// Which files each rule covers.
// ---------------------------------------------------------------------------------------------

fn is_handler(path: &str, _source: &str) -> bool {
    path.starts_with("broker/src/kafka/handlers/")
}

fn is_broker_source_but_blocking(path: &str, source: &str) -> bool {
    // Handlers may not block at all: `handler-leak` already refuses `spawn_blocking` there.
    path.starts_with("broker/src/") && path != "broker/src/blocking.rs" && !is_handler(path, source)
}

fn may_not_import_rocksdb(path: &str, _source: &str) -> bool {
    path != "storage/src/kv/rocks.rs" && !path.starts_with("raft/src/store/")
}

fn is_client_source(path: &str, _source: &str) -> bool {
    path.starts_with("client/")
}

fn is_pure_module(path: &str, source: &str) -> bool {
    if path.starts_with("raft/src/image/") {
        return true;
    }
    // The group coordinator's state machines; `coordinator.rs` is its async service and
    // `lag.rs` reads partitions' high watermarks for it.
    if let Some(name) = path.strip_prefix("broker/src/group/") {
        return name != "coordinator.rs" && name != "lag.rs";
    }
    // The transaction coordinator's records, metadata and state machine; the rest is its
    // service (routing, markers, KIP-890 verification), which does I/O.
    if let Some(name) = path.strip_prefix("broker/src/txn/") {
        return !matches!(name, "coordinator.rs" | "markers.rs" | "verify.rs");
    }
    let Some(name) = path.strip_prefix("broker/src/coordinator/") else {
        return false;
    };
    let file_name = name.rsplit('/').next().unwrap_or(name);
    file_name == "machine.rs"
        || file_name.ends_with("_machine.rs")
        || source
            .lines()
            .any(|line| line.trim_start().starts_with(PURE_MARKER))
}

// ---------------------------------------------------------------------------------------------
// The matchers: one code line (or one expanded `use` path) in, what it broke out.
// ---------------------------------------------------------------------------------------------

/// What a handler may name from `streambus_raft`: the plain data it translates.
const RAFT_PATHS_FOR_HANDLERS: &[&str] = &[
    "command",
    "image",
    "error",
    "MetadataCommand",
    "MetadataResponse",
    "Rejection",
    "RaftError",
    "MetadataImage",
];

fn handler_leak(line: &str) -> Option<String> {
    const DENIED: &[(&str, &str)] = &[
        (
            "streambus_storage",
            "storage is reached through `Partition`",
        ),
        ("openraft", "raft internals stay in the raft crate"),
        ("rocksdb", "RocksDB stays behind the stores"),
        (".log()", "reaching past `Partition` into its log"),
        (
            "spawn_blocking",
            "blocking work belongs to the partition and ops layers",
        ),
    ];
    for (token, why) in DENIED {
        if has_token(line, token) {
            return Some(format!("a handler uses `{token}`: {why}"));
        }
    }
    for at in token_positions(line, "streambus_raft") {
        let rest = &line[at + "streambus_raft".len()..];
        let segment: String = rest
            .strip_prefix("::")
            .unwrap_or("")
            .chars()
            .take_while(|c| is_ident_char(*c))
            .collect();
        if !RAFT_PATHS_FOR_HANDLERS.contains(&segment.as_str()) {
            return Some(format!(
                "a handler uses `streambus_raft::{segment}`: only the plain metadata types \
                 ({}) are for handlers",
                RAFT_PATHS_FOR_HANDLERS.join(", ")
            ));
        }
    }
    None
}

fn unmarked_spawn_blocking(line: &str) -> Option<String> {
    has_token(line, "spawn_blocking").then(|| {
        "`spawn_blocking` outside broker/src/blocking.rs: use `crate::blocking::spawn`, or the \
         debug check on log locks cannot tell this thread from a runtime worker"
            .to_owned()
    })
}

fn rocksdb_import(line: &str) -> Option<String> {
    ["use rocksdb", "rocksdb::", "librocksdb_sys"]
        .into_iter()
        .find(|token| has_token(line, token))
        .map(|token| {
            format!(
                "`{token}` outside storage/src/kv/rocks.rs and raft/src/store/: RocksDB stays \
                 behind `KvStore` and the raft stores"
            )
        })
}

fn server_crate_path(line: &str) -> Option<String> {
    ["streambus_broker", "streambus_storage", "streambus_raft"]
        .into_iter()
        .find(|token| has_token(line, token))
        .map(|token| {
            format!("the client names `{token}`: it talks to brokers over the Kafka protocol only")
        })
}

/// Clocks, randomness and I/O a deterministic state machine must not touch.
const IMPURE_TOKENS: &[&str] = &[
    "SystemTime",
    "Instant::now",
    "std::time::Instant",
    "tokio::time",
    "chrono",
    "std::fs",
    "tokio::fs",
    "std::net",
    "tokio::net",
    "rand::",
    "use rand",
    "thread::sleep",
    "File::",
    "Uuid::new_v4",
];

fn clock_or_io(line: &str) -> Option<String> {
    IMPURE_TOKENS
        .iter()
        .find(|token| has_token(line, token))
        .map(|token| {
            format!(
                "`{token}` in a pure state machine: time, randomness and ids come in as \
                 arguments, and it does no I/O"
            )
        })
}

/// The `streambus-*` server crates named as keys of any dependency table of a Cargo manifest
/// (`[dependencies]`, `[dev-dependencies]`, `[build-dependencies]`, `[target.*.dependencies]`,
/// `[dependencies.streambus-raft]`), as `(line number, detail)`.
fn client_manifest_dependencies(manifest: &str) -> Vec<(usize, String)> {
    const CRATES: &[&str] = &["streambus-broker", "streambus-storage", "streambus-raft"];
    let mut out = Vec::new();
    let mut in_dependencies = false;
    for (i, line) in manifest.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') {
            let table = line.trim_matches(|c| c == '[' || c == ']');
            in_dependencies = table.contains("dependencies");
            if let Some(name) = CRATES.iter().find(|name| has_token(table, name)) {
                out.push((i + 1, format!("the client depends on `{name}`")));
            }
            continue;
        }
        if !in_dependencies {
            continue;
        }
        if let Some(name) = CRATES.iter().find(|name| has_token(line, name)) {
            out.push((i + 1, format!("the client depends on `{name}`")));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Reading sources.
// ---------------------------------------------------------------------------------------------

/// One line of code: comments stripped; a `use` statement joined over its lines.
#[derive(Debug)]
struct CodeLine {
    /// 1-based line number (of the first line of a `use` statement).
    number: usize,
    /// The code as written (a `use` statement on one line).
    text: String,
    /// What the matchers see: the line itself, or one `use <path>;` per imported path.
    checked: Vec<String>,
}

fn code_lines(source: &str) -> Vec<CodeLine> {
    let mut out = Vec::new();
    let mut pending_use: Option<(usize, String)> = None;
    for (i, raw) in source.lines().enumerate() {
        let code = strip_comment(raw).trim();
        if code.is_empty() {
            continue;
        }
        let (number, text) = match pending_use.take() {
            Some((number, mut text)) => {
                text.push(' ');
                text.push_str(code);
                (number, text)
            }
            None => (i + 1, code.to_owned()),
        };
        let Some(tree) = use_tree(&text) else {
            out.push(CodeLine {
                number,
                checked: vec![text.clone()],
                text,
            });
            continue;
        };
        if !text.ends_with(';') {
            pending_use = Some((number, text));
            continue;
        }
        let mut paths = Vec::new();
        expand_use_tree("", tree.trim_end_matches(';'), &mut paths);
        out.push(CodeLine {
            number,
            checked: paths.iter().map(|path| format!("use {path};")).collect(),
            text,
        });
    }
    out
}

/// The code before a `//` comment (a `//` inside a string literal cuts the line short too, which
/// only ever hides text from the matchers).
fn strip_comment(line: &str) -> &str {
    line.find("//").map_or(line, |at| &line[..at])
}

/// The tree of a `use` statement (`use a::{b, c};` → `a::{b, c};`), whatever its visibility.
fn use_tree(text: &str) -> Option<&str> {
    let rest = match text.strip_prefix("pub") {
        Some(rest) if rest.starts_with('(') => &rest[rest.find(')')? + 1..],
        Some(rest) => rest,
        None => text,
    };
    rest.trim_start().strip_prefix("use ")
}

/// `a::{b, c::{d, e}}` under `prefix` → `a::b`, `a::c::d`, `a::c::e`.
fn expand_use_tree(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    let (Some(open), Some(close)) = (tree.find('{'), tree.rfind('}')) else {
        out.push(format!("{prefix}{tree}"));
        return;
    };
    let prefix = format!("{prefix}{}", &tree[..open]);
    let mut depth = 0usize;
    let mut start = open + 1;
    for (at, c) in tree[..close]
        .char_indices()
        .skip_while(|(at, _)| *at <= open)
    {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                expand_use_tree(&prefix, &tree[start..at], out);
                start = at + 1;
            }
            _ => {}
        }
    }
    if !tree[start..close].trim().is_empty() {
        expand_use_tree(&prefix, &tree[start..close], out);
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Where `token` occurs in `line` as a whole word: not glued to an identifier on a side where
/// the token itself starts or ends with an identifier character (`rand::` is not `operand::`).
fn token_positions<'a>(line: &'a str, token: &'a str) -> impl Iterator<Item = usize> + 'a {
    let check_before = token.starts_with(is_ident_char);
    let check_after = token.ends_with(is_ident_char);
    line.match_indices(token).filter_map(move |(at, _)| {
        let before = line[..at].chars().next_back();
        let after = line[at + token.len()..].chars().next();
        let glued_before = check_before && before.is_some_and(is_ident_char);
        let glued_after = check_after && after.is_some_and(is_ident_char);
        (!glued_before && !glued_after).then_some(at)
    })
}

fn has_token(line: &str, token: &str) -> bool {
    token_positions(line, token).next().is_some()
}

// ---------------------------------------------------------------------------------------------
// Walking the workspace.
// ---------------------------------------------------------------------------------------------

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("directory entry");
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let file_type = entry.file_type().expect("file type");
        if file_type.is_dir() {
            if !name.starts_with('.') && !SKIPPED_DIRS.contains(&name.as_ref()) {
                rust_files(&path, out);
            }
        } else if file_type.is_file() && name.ends_with(".rs") {
            out.push(path);
            assert!(out.len() <= FILES_MAX, "more than {FILES_MAX} .rs files");
        }
    }
}

/// `path` relative to the workspace root, with `/` separators.
fn relative(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).expect("under the workspace root");
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

// ---------------------------------------------------------------------------------------------
// The matchers against tiny sources.
// ---------------------------------------------------------------------------------------------

/// The rules broken in `source` as if it were at `path`, as `(line, rule)`.
fn broken(path: &str, source: &str) -> Vec<(usize, &'static str)> {
    check_source(path, source)
        .into_iter()
        .map(|v| (v.line, v.rule))
        .collect()
}

const HANDLER: &str = "broker/src/kafka/handlers/produce.rs";

#[test]
fn handler_rule_flags_storage_raft_internals_log_and_blocking() {
    let source = "\
use streambus_storage::StorageError;
use streambus_raft::{command::TopicId, store::MetadataStore};
use streambus_raft::node::MetadataNode;
use openraft::Raft;
let log = partition.log();
let found = tokio::task::spawn_blocking(move || lookup());
let e = streambus_raft::lifecycle::BrokerLifecycle::new();
use streambus_raft;
";
    assert_eq!(
        broken(HANDLER, source),
        (1..=8)
            .map(|line| (line, "handler-leak"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn handler_rule_accepts_metadata_types_and_partition_calls() {
    let source = "\
use streambus_raft::command::{BrokerId, CreateTopic, TopicId};
use streambus_raft::image::TopicRecord;
use streambus_raft::{MetadataCommand, MetadataImage, MetadataResponse, RaftError, Rejection};
// a comment about partition.log() and streambus_storage
let valid = streambus_raft::image::validate_topic_name(name); // not spawn_blocking
let read = partition.read(request).await; // .log() is the partition's
let catalog = ctx.catalog();
";
    assert_eq!(broken(HANDLER, source), vec![]);
}

#[test]
fn blocking_rule_flags_spawn_blocking_outside_the_blocking_module() {
    let source = "\
let read = tokio::task::spawn_blocking(move || log.read());
use tokio::task::spawn_blocking;
let marked = crate::blocking::spawn(move || log.read()); // not spawn_blocking
";
    assert_eq!(
        broken("broker/src/partition/read.rs", source),
        vec![(1, "unmarked-blocking"), (2, "unmarked-blocking")]
    );
    assert_eq!(broken("broker/src/blocking.rs", source), vec![]);
    assert_eq!(broken("raft/src/store/log_store.rs", source), vec![]);
}

#[test]
fn rocksdb_rule_flags_imports_outside_the_two_stores() {
    let source = "\
use rocksdb::{Options, DB};
use rocksdb;
let options = rocksdb::WriteOptions::default();
let db = ::rocksdb::DB::open(&options, path)?;
";
    let path = "broker/src/partition/manager.rs";
    assert_eq!(
        broken(path, source),
        (1..=4)
            .map(|line| (line, "rocksdb-import"))
            .collect::<Vec<_>>()
    );
    assert_eq!(broken("storage/src/kv/rocks.rs", source), vec![]);
    assert_eq!(broken("raft/src/store/log_store.rs", source), vec![]);
}

#[test]
fn rocksdb_rule_accepts_the_kv_store_and_mentions() {
    let source = "\
use streambus_storage::{KvStore, RocksKv};
let dir = data_dir.join(\"rocksdb\");
let kv = RocksKv::open(&dir)?;
";
    assert_eq!(broken("broker/src/partition/manager.rs", source), vec![]);
}

#[test]
fn client_rule_flags_server_crates_in_sources() {
    let source = "\
use streambus_storage::batch::testing::batch;
let image: streambus_raft::MetadataImage = todo!();
use streambus_broker::config::Config;
";
    assert_eq!(
        broken("client/src/producer/sender.rs", source),
        (1..=3)
            .map(|line| (line, "client-depends-on-server"))
            .collect::<Vec<_>>()
    );
    let clean = "use kafka_protocol::records::RecordBatchEncoder;\nuse crate::Client;\n";
    assert_eq!(broken("client/src/producer/sender.rs", clean), vec![]);
}

#[test]
fn client_rule_flags_server_crates_in_the_manifest() {
    let manifest = r#"
[package]
name = "streambus-client"

[dependencies]
kafka-protocol = { workspace = true, features = ["client", "broker"] }
streambus-storage.workspace = true

[dev-dependencies]
streambus-broker = { path = "../broker" }

[target.'cfg(unix)'.dependencies]
streambus-raft = { workspace = true }

[dependencies.streambus-raft]
path = "../raft"

[features]
streambus-raft = []
"#;
    let lines: Vec<usize> = client_manifest_dependencies(manifest)
        .into_iter()
        .map(|(line, _)| line)
        .collect();
    assert_eq!(lines, vec![7, 10, 13, 15]);
    let clean = "[dependencies]\nkafka-protocol = { workspace = true, features = [\"broker\"] }\n\
                 # streambus-broker is never a dependency\n";
    assert_eq!(client_manifest_dependencies(clean), vec![]);
}

#[test]
fn purity_rule_flags_clocks_randomness_and_io() {
    let source = "\
let now = SystemTime::now();
let start = Instant::now();
use std::time::{Duration, Instant};
tokio::time::sleep(delay).await;
let at = chrono::Utc::now();
use std::fs::File;
let bytes = tokio::fs::read(path).await?;
use std::net::TcpStream;
use tokio::{net::TcpListener, sync::mpsc};
let n: u64 = rand::random();
use rand::Rng;
std::thread::sleep(delay);
let file = File::open(path)?;
let id = uuid::Uuid::new_v4();
";
    let path = "raft/src/image/topics.rs";
    assert_eq!(
        broken(path, source),
        (1..=14)
            .map(|line| (line, "impure-state-machine"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn purity_rule_accepts_time_passed_in() {
    let source = "\
use std::time::Duration;
pub fn expire(&mut self, now_ms: i64, timeout: Duration) -> Vec<Record> {
let operand = brand::random_ish(); // not rand::
let id = Uuid::from_bytes(command.id);
let file_name = record.file_name();
";
    assert_eq!(broken("raft/src/image/topics.rs", source), vec![]);
}

#[test]
fn purity_rule_covers_coordinator_state_machines_by_name_or_marker() {
    let impure = "let now = Instant::now();\n";
    for path in [
        "broker/src/coordinator/machine.rs",
        "broker/src/coordinator/group/machine.rs",
        "broker/src/coordinator/group_machine.rs",
        "broker/src/group/classic.rs",
        "broker/src/group/consumer.rs",
        "broker/src/txn/machine.rs",
    ] {
        assert_eq!(
            broken(path, impure),
            vec![(1, "impure-state-machine")],
            "{path}"
        );
    }
    for path in ["broker/src/group/coordinator.rs", "broker/src/group/lag.rs"] {
        assert!(
            broken(path, impure).is_empty(),
            "{path}: the group coordinator's service is async, not a state machine"
        );
    }
    let marked = "// tidy: pure\nlet now = Instant::now();\n";
    assert_eq!(
        broken("broker/src/coordinator/group/state.rs", marked),
        vec![(2, "impure-state-machine")]
    );
    assert_eq!(broken("broker/src/coordinator/runtime.rs", impure), vec![]);
    assert_eq!(broken("broker/src/partition/machine.rs", impure), vec![]);
}

#[test]
fn use_statements_are_read_whole_and_expanded() {
    let source = "\
pub(crate) use streambus_raft::{
    command::{BrokerId, TopicId},
    // a comment inside
    store::MetadataStore, MetadataImage,
};
fn f() {}
";
    let lines = code_lines(source);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].number, 1);
    assert_eq!(
        lines[0].checked,
        vec![
            "use streambus_raft::command::BrokerId;",
            "use streambus_raft::command::TopicId;",
            "use streambus_raft::store::MetadataStore;",
            "use streambus_raft::MetadataImage;",
        ]
    );
    assert_eq!(lines[1].number, 6);
    assert_eq!(broken(HANDLER, source), vec![(1, "handler-leak")]);
}
