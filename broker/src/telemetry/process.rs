//! The standard `process_*` series of Prometheus client libraries (CPU seconds, resident and
//! virtual memory, open and maximum file descriptors, threads, start time), read from
//! `/proc/self` at each scrape and written straight into the exposition text: a CPU-seconds
//! counter is fractional, which the `metrics` facade's integer counters cannot carry. Linux
//! only; a series whose source cannot be read is left out.

use super::text::single;

/// Appends the process series to `out`; each is left out alone when its source cannot be read.
pub fn render(out: &mut String) {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    let fields: Vec<&str> = stat
        .as_deref()
        // The command name may hold spaces and parentheses: fields follow its last `)`.
        .and_then(|s| s.get(s.rfind(')')? + 2..))
        .map(|rest| rest.split(' ').collect())
        .unwrap_or_default();
    // Numbered as in proc(5), from field 3 (state) at index 0.
    let field = |n: usize| -> Option<f64> { fields.get(n.checked_sub(3)?)?.parse().ok() };
    let ticks = rustix::param::clock_ticks_per_second() as f64;
    let series: [(&str, &str, &str, Option<f64>); 7] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            field(14)
                .zip(field(15))
                .filter(|_| ticks > 0.0)
                .map(|(user, system)| (user + system) / ticks),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            resident_bytes(),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            field(23),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            // Less the descriptor of the listing itself.
            std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|dir| dir.count().saturating_sub(1) as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max_fds(),
        ),
        (
            "process_threads",
            "gauge",
            "Number of OS threads in the process.",
            field(20),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot_time()
                .zip(field(22))
                .filter(|_| ticks > 0.0)
                .map(|(boot, start)| boot + start / ticks),
        ),
    ];
    for (name, kind, help, value) in series {
        if let Some(value) = value {
            single(out, name, kind, help, value);
        }
    }
}

/// VmRSS of `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024.0)
}

/// The soft limit on open files.
fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// When the machine booted, in seconds since the epoch.
fn boot_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
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
