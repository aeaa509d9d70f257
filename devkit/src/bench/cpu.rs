//! CPU time of processes from /proc, before and after a run, as a [`CpuReport`]: the
//! serving side, the servers, and each process by name.

use super::report::CpuReport;

/// User + system CPU seconds a process (and its reaped children) has used so far, or
/// `None` when /proc has no such process (ended, or not Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    // utime, stime, cutime, cstime.
    stat_seconds(&format!("/proc/{pid}/stat"), 4)
}

/// User + system CPU seconds one thread of this process has used so far (its children's
/// are the process's, not the thread's), or `None` when it has ended.
pub fn thread_cpu_seconds(tid: u32) -> Option<f64> {
    // utime, stime.
    stat_seconds(&format!("/proc/self/task/{tid}/stat"), 2)
}

/// The sum of the `n` time fields from utime (field 14) of a /proc `stat` file, in seconds.
fn stat_seconds(path: &str, n: usize) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may hold spaces; fields after its ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime is field 14, i.e. 11 after the name.
    let ticks: u64 = f
        .get(11..11 + n)?
        .iter()
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 })
}

/// What a CPU reading is taken of: a process, or threads of this process (the bare
/// loop's, which share the process with the load generator).
#[derive(Debug, Clone)]
pub enum Tracked {
    Process(u32),
    Threads(Vec<u32>),
}

impl Tracked {
    fn seconds(&self) -> Option<f64> {
        match self {
            Tracked::Process(pid) => cpu_seconds(*pid),
            Tracked::Threads(tids) => tids.iter().map(|&t| thread_cpu_seconds(t)).sum(),
        }
    }
}

/// The processes of a run and their CPU time when the run started.
pub struct CpuWatch {
    /// Dispatcher and workers, or the baseline worker, or the bare loop's thread.
    service: Vec<Tracked>,
    /// nats-server and redis-server (when started for the run).
    servers: Vec<Tracked>,
    /// Every process by name, the load generator included.
    named: Vec<(String, Tracked)>,
    service0: Option<f64>,
    servers0: Option<f64>,
    named0: Vec<Option<f64>>,
}

/// The CPU seconds of `tracked` together, `None` when there are none or one is gone.
fn sum(tracked: &[Tracked]) -> Option<f64> {
    if tracked.is_empty() {
        return None;
    }
    tracked.iter().map(|t| t.seconds()).sum()
}

impl CpuWatch {
    /// Takes the first reading.
    pub fn start(
        service: Vec<Tracked>,
        servers: Vec<Tracked>,
        named: Vec<(String, Tracked)>,
    ) -> CpuWatch {
        CpuWatch {
            service0: sum(&service),
            servers0: sum(&servers),
            named0: named.iter().map(|(_, t)| t.seconds()).collect(),
            service,
            servers,
            named,
        }
    }

    /// Takes the second reading; `completed` jobs give the jobs per CPU-second.
    pub fn finish(self, completed: u64) -> CpuReport {
        let service_s = self.service0.zip(sum(&self.service)).map(|(a, b)| b - a);
        let servers_s = self.servers0.zip(sum(&self.servers)).map(|(a, b)| b - a);
        let per = |s: Option<f64>| s.filter(|&v| v > 0.0).map(|v| completed as f64 / v);
        let per_process = self
            .named
            .iter()
            .zip(self.named0)
            .filter_map(|((n, t), b)| Some((n.clone(), t.seconds()? - b?)))
            .collect();
        CpuReport {
            service_s,
            servers_s,
            per_process,
            jobs_per_service_cpu_s: per(service_s),
            jobs_per_total_cpu_s: per(service_s.zip(servers_s).map(|(a, b)| a + b)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_cpu_time() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        let s = super::cpu_seconds(std::process::id()).expect("/proc/self/stat");
        assert!(s >= 0.0);
        assert!(super::cpu_seconds(u32::MAX).is_none());
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let t = super::thread_cpu_seconds(tid).expect("/proc/self/task/<tid>/stat");
        assert!(t > 0.0 && t <= s + 0.02, "thread {t} s, process {s} s");
    }

    #[test]
    fn a_watch_reports_own_process_and_nothing_for_no_pids() {
        let me = super::Tracked::Process(std::process::id());
        let w = super::CpuWatch::start(vec![me.clone()], Vec::new(), vec![("me".into(), me)]);
        let r = w.finish(10);
        assert!(r.service_s.is_some_and(|s| s >= 0.0));
        assert!(r.servers_s.is_none());
        assert!(r.per_process.contains_key("me"));
    }
}

/// Moves every thread of this process (the load generator) onto the CPUs listed in
/// `JETINFER_BENCH_CPUS` (`12-15` or `12,13,14,15`), when set. Called after the stack has
/// started: its processes keep the affinity they were started with (e.g. `taskset -c 0-11`
/// around the bench), so generator and system under test do not share cores.
pub fn pin_load_generator_from_env() -> Result<Option<Vec<usize>>, String> {
    let Ok(spec) = std::env::var("JETINFER_BENCH_CPUS") else {
        return Ok(None);
    };
    let cpus = parse_cpu_list(&spec).ok_or_else(|| {
        format!("JETINFER_BENCH_CPUS={spec:?} is not a CPU list like 12-15 or 12,13")
    })?;
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in &cpus {
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| e.to_string())?;
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let rc =
            unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
        if rc != 0 {
            return Err(format!(
                "sched_setaffinity({tid}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(Some(cpus))
}

/// `0-3,8` → [0, 1, 2, 3, 8].
fn parse_cpu_list(spec: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().ok()?..=b.parse::<usize>().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    (!cpus.is_empty()).then_some(cpus)
}

#[cfg(test)]
mod pin_tests {
    #[test]
    fn cpu_lists_parse() {
        assert_eq!(super::parse_cpu_list("12-15"), Some(vec![12, 13, 14, 15]));
        assert_eq!(super::parse_cpu_list("0,2-3"), Some(vec![0, 2, 3]));
        assert_eq!(super::parse_cpu_list("x"), None);
        assert_eq!(super::parse_cpu_list(""), None);
    }
}
