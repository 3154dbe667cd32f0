//! The standard `process_*` metrics (resident and virtual memory, CPU seconds, open and
//! maximum file descriptors, start time) read from `/proc/self` at each scrape, as
//! Prometheus's client libraries export them. Linux only; elsewhere they stay 0.

use prometheus::{Counter, IntGauge, Registry};

pub(super) struct ProcessMetrics {
    resident: IntGauge,
    virtual_bytes: IntGauge,
    cpu: Counter,
    open_fds: IntGauge,
    max_fds: IntGauge,
    start_time: prometheus::Gauge,
}

/// Clock ticks per second in `/proc/<pid>/stat` (the kernel's fixed USER_HZ ABI).
const USER_HZ: f64 = 100.0;

impl ProcessMetrics {
    pub(super) fn register(r: &Registry) -> Self {
        let g = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            r.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let cpu = Counter::new(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        )
        .expect("valid metric");
        r.register(Box::new(cpu.clone())).expect("unique metric");
        let start_time = prometheus::Gauge::new(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
        )
        .expect("valid metric");
        r.register(Box::new(start_time.clone()))
            .expect("unique metric");
        let m = ProcessMetrics {
            resident: g(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
            ),
            virtual_bytes: g(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
            ),
            cpu,
            open_fds: g("process_open_fds", "Number of open file descriptors."),
            max_fds: g(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            ),
            start_time,
        };
        m.start_time.set(start_seconds().unwrap_or(0.0));
        m
    }

    /// Reads the current values.
    pub(super) fn update(&self) {
        if let Some(s) = stat() {
            self.resident.set(s.rss_bytes as i64);
            self.virtual_bytes.set(s.vsize as i64);
            let cpu = s.cpu_ticks as f64 / USER_HZ;
            if cpu > self.cpu.get() {
                self.cpu.inc_by(cpu - self.cpu.get());
            }
        }
        if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(d.count() as i64);
        }
        if let Some(max) = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| {
                l.lines()
                    .find(|x| x.starts_with("Max open files"))
                    .and_then(|x| x.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
            })
        {
            self.max_fds.set(max);
        }
    }
}

struct Stat {
    cpu_ticks: u64,
    vsize: u64,
    rss_bytes: u64,
    start_ticks: u64,
}

/// `/proc/self/stat`: fields after the command name (which may hold spaces), see proc(5).
fn stat() -> Option<Stat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &text[text.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is f[n - 3].
    let n = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    let page = 4096u64;
    Some(Stat {
        cpu_ticks: n(14)? + n(15)?,
        vsize: n(23)?,
        rss_bytes: n(24)? * page,
        start_ticks: n(22)?,
    })
}

/// Process start: boot time (`/proc/stat` btime) plus the start ticks.
fn start_seconds() -> Option<f64> {
    let btime: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime + stat()?.start_ticks as f64 / USER_HZ)
}
