//! The standard `process_*` series of Prometheus client libraries (CPU seconds, resident and
//! virtual memory, open and maximum file descriptors, threads, start time), read from
//! `/proc/self` at each scrape and written straight into the exposition text: a CPU-seconds
//! counter is fractional, which the `metrics` facade's integer counters cannot carry. Linux
//! only; elsewhere nothing is written.

use std::fmt::Write as _;

/// Appends the process series to `out`.
pub fn render(out: &mut String) {
    let Some(sample) = sample() else {
        return;
    };
    let mut series = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name} {value}");
        out.push('\n');
    };
    series(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        sample.cpu_seconds,
    );
    series(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        sample.resident_bytes,
    );
    series(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        sample.virtual_bytes,
    );
    series(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        sample.open_fds,
    );
    if let Some(max) = sample.max_fds {
        series(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    series(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        sample.threads,
    );
    if let Some(start) = sample.start_time_seconds {
        series(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start,
        );
    }
}

struct Sample {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    open_fds: f64,
    max_fds: Option<f64>,
    threads: f64,
    start_time_seconds: Option<f64>,
}

/// Clock ticks per second of `/proc` times: USER_HZ, 100 on every Linux architecture that
/// StreamBus builds for.
const TICKS_PER_SECOND: f64 = 100.0;

fn sample() -> Option<Sample> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: fields follow its last `)`.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // Numbered as in proc(5), from field 3 (state) at index 0.
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let cpu_seconds = (field(14)? + field(15)?) / TICKS_PER_SECOND;
    let threads = field(20)?;
    let start_ticks = field(22)?;
    let virtual_bytes = field(23)?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let resident_kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        });
    let boot_time: Option<f64> = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    });
    Some(Sample {
        cpu_seconds,
        resident_bytes: resident_kib * 1024.0,
        virtual_bytes,
        open_fds,
        max_fds,
        threads,
        start_time_seconds: boot_time.map(|boot| boot + start_ticks / TICKS_PER_SECOND),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_is_described() {
        let mut text = String::new();
        super::render(&mut text);
        if cfg!(target_os = "linux") {
            assert!(text.contains("# TYPE process_cpu_seconds_total counter"));
            let rss = text
                .lines()
                .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
                .expect("rss");
            assert!(rss.parse::<f64>().expect("a number") > 1e6, "{rss}");
        }
    }
}
