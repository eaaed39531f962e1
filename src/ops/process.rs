//! The standard process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, …, the names every
//! Prometheus client library uses), read from `/proc/self` at each scrape.
//!
//! A module rather than a crate: the maintained collector for this
//! Prometheus client (Linkerd's `kubert-prometheus-process`) is built for
//! prometheus-client 0.23, whose registry ours (0.25) cannot take, and the
//! client's own collector is not released. Linux only: elsewhere, and when
//! `/proc` cannot be read, the metrics are left out of the scrape.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// Clock ticks per second in `/proc/<pid>/stat`: the kernel's `USER_HZ`,
/// 100 on every architecture Rust builds Linux programs for.
const TICKS_PER_SECOND: f64 = 100.0;

/// Registered on the metrics registry; samples `/proc/self` when scraped.
#[derive(Debug)]
pub(crate) struct ProcessCollector;

/// One reading of the process's state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub(crate) cpu_seconds: f64,
    pub(crate) resident_bytes: u64,
    pub(crate) virtual_bytes: u64,
    pub(crate) start_time_seconds: f64,
    pub(crate) threads: u64,
    pub(crate) open_fds: u64,
    pub(crate) max_fds: Option<u64>,
}

impl Sample {
    /// `None` where `/proc/self` cannot be read (not Linux).
    pub(crate) fn read() -> Option<Sample> {
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let boot = parse_boot_time(&std::fs::read_to_string("/proc/stat").ok()?)?;
        let resident_kib = parse_resident_kib(&std::fs::read_to_string("/proc/self/status").ok()?)?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| parse_max_open_files(&l));
        Some(Sample {
            cpu_seconds: (stat.utime + stat.stime) as f64 / TICKS_PER_SECOND,
            resident_bytes: resident_kib * 1024,
            virtual_bytes: stat.vsize,
            start_time_seconds: boot as f64 + stat.start_ticks as f64 / TICKS_PER_SECOND,
            threads: stat.threads,
            open_fds,
            max_fds,
        })
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let Some(s) = Sample::read() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds.",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory",
                "Resident memory size in bytes.",
                Some(Unit::Bytes),
                s.resident_bytes as f64,
            ),
            (
                "process_virtual_memory",
                "Virtual memory size in bytes.",
                Some(Unit::Bytes),
                s.virtual_bytes as f64,
            ),
            (
                "process_start_time",
                "Start time of the process since unix epoch in seconds.",
                Some(Unit::Seconds),
                s.start_time_seconds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                None,
                s.threads as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                s.open_fds as f64,
            ),
        ];
        let max_fds = s.max_fds.map(|max| {
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                None,
                max as f64,
            )
        });
        for (name, help, unit, value) in gauges.into_iter().chain(max_fds) {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(
                name,
                help,
                unit.as_ref(),
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// What `/proc/self/stat` says, of what the metrics need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
    vsize: u64,
}

/// `/proc/<pid>/stat`: fields after the command name, which is in
/// parentheses and may itself hold spaces and parentheses, so the fields
/// are counted from the last `)`. Field 14 is utime, 15 stime, 20
/// num_threads, 22 starttime, 23 vsize (proc(5), counting from 1).
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // The first field after the name is field 3 (state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
    })
}

/// `btime` of `/proc/stat`: when the system booted, in seconds since the epoch.
pub(crate) fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// `VmRSS` of `/proc/<pid>/status`, in KiB.
pub(crate) fn parse_resident_kib(text: &str) -> Option<u64> {
    let value = text.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    value.trim().strip_suffix("kB")?.trim().parse().ok()
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits`; `None` when
/// unlimited.
pub(crate) fn parse_max_open_files(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_end_of_the_name() {
        let tail = "R 1 1 1 0 -1 4194304 98 0 0 0 250 50 0 0 20 0 7 0 413102 3133440 421 18446744073709551615 0";
        let want = Stat {
            utime: 250,
            stime: 50,
            threads: 7,
            start_ticks: 413102,
            vsize: 3133440,
        };
        let cases: &[(&str, Option<&Stat>)] = &[
            (&format!("42 (fitbit-proxy) {tail}"), Some(&want)),
            // A name with spaces and a closing parenthesis.
            (&format!("42 (a) b (c)) {tail}"), Some(&want)),
            ("42 (short) R 1 2 3", None),
            ("no parenthesis at all", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_stat(text).as_ref(), *want, "{text}");
        }
    }

    #[test]
    fn status_limits_and_boot_time() {
        assert_eq!(
            parse_resident_kib("Name:\tx\nVmRSS:\t    2180 kB\nThreads:\t1\n"),
            Some(2180)
        );
        assert_eq!(parse_resident_kib("Name:\tx\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             63581                63581                processes \n\
                      Max open files            20000                524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(20000));
        assert_eq!(
            parse_max_open_files(
                "Max open files            unlimited            unlimited            files\n"
            ),
            None
        );
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1796283636\nprocesses 9\n"),
            Some(1_796_283_636)
        );
        assert_eq!(parse_boot_time("cpu  1 2 3\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_as_running() {
        let s = Sample::read().expect("/proc/self is readable on Linux");
        assert!(
            s.resident_bytes > 0 && s.virtual_bytes >= s.resident_bytes,
            "{s:?}"
        );
        assert!(s.threads >= 1 && s.open_fds >= 3, "{s:?}");
        assert!(s.max_fds.is_none_or(|max| max >= s.open_fds), "{s:?}");
        // A start time in seconds since the epoch, not since boot.
        assert!(s.start_time_seconds > 1.5e9, "{s:?}");
        assert!(s.cpu_seconds >= 0.0, "{s:?}");
    }
}
