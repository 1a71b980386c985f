//! CPU meters read from `/proc` and `getrusage(2)`: of a process, of this bench's reaped
//! children, and of the whole machine (to show what other processes used meanwhile).

use std::time::Duration;

/// One timed copy, with the CPU time of the receiving and the sending side.
pub struct Transfer {
    pub wall: Duration,
    pub receiver: Cpu,
    pub sender: Cpu,
    /// CPU seconds the rest of the machine used meanwhile (other processes: anything but
    /// the two sides and this bench).
    pub other: f64,
}

/// Busy CPU seconds of the whole machine so far (`/proc/stat`, all but idle and iowait).
pub fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
    let cpu = stat.lines().next().expect("a cpu line");
    let f: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().expect("a number in /proc/stat"))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy = f[0] + f[1] + f[2] + f[5] + f[6] + f.get(7).copied().unwrap_or(0);
    // SAFETY: sysconf(3) has no preconditions.
    busy as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Measures the CPU time the rest of the machine uses over a stretch of time.
pub struct Meter {
    busy: f64,
    own: f64,
    children: f64,
}

impl Meter {
    pub fn start() -> Meter {
        Meter {
            busy: machine_busy(),
            own: own_cpu(),
            children: children_cpu().total(),
        }
    }

    /// CPU seconds used since the start by every process but this bench, its reaped
    /// children and `ours` (the CPU seconds the caller's sites used meanwhile).
    pub fn other(&self, ours: f64) -> f64 {
        let other = machine_busy()
            - self.busy
            - (own_cpu() - self.own)
            - (children_cpu().total() - self.children)
            - ours;
        other.max(0.0)
    }
}

/// This bench process's CPU seconds so far.
pub fn own_cpu() -> f64 {
    cpu_of(std::process::id(), false).total()
}

/// CPU seconds, user and system.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    pub user: f64,
    pub sys: f64,
}

impl Cpu {
    pub fn total(self) -> f64 {
        self.user + self.sys
    }
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            user: self.user - o.user,
            sys: self.sys - o.sys,
        }
    }
}

/// CPU time of process `pid`; with `children`, of its reaped children.
pub fn cpu_of(pid: u32, children: bool) -> Cpu {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the command name, which ends at the last ')': state is field 3.
    let rest = &stat[stat.rfind(')').expect("a command name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let at = |n: usize| {
        fields[n - 3]
            .parse::<u64>()
            .expect("a number in /proc/<pid>/stat")
    };
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let (u, s) = if children {
        (at(16), at(17))
    } else {
        (at(14), at(15))
    };
    Cpu {
        user: u as f64 / hz,
        sys: s as f64 / hz,
    }
}

/// CPU time of this process's reaped children.
pub fn children_cpu() -> Cpu {
    // SAFETY: getrusage(2) writes into the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Cpu {
        user: tv(u.ru_utime),
        sys: tv(u.ru_stime),
    }
}
