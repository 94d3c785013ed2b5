//! CPU time spent by this process and by other processes of the machine, read from `/proc`
//! (Linux), so that a bench can report CPU per event beside its throughput. On a machine
//! whose cores are shared by client and server, throughput is bounded by the cores divided by
//! the CPU both sides spend per event; unlike wall-clock rates, CPU per event hardly moves
//! with the load of other processes.

use std::fs;

/// Clock ticks per second of `/proc/*/stat` (`USER_HZ`, 100 on Linux).
const TICKS: f64 = 100.0;

/// User plus system CPU seconds in a `/proc/PID/stat` line, and its command name.
fn parse_stat(line: &str) -> Option<(String, f64)> {
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?.to_string();
    // Fields after the command: state is field 3; utime and stime are fields 14 and 15.
    let rest: Vec<&str> = line.get(close + 2..)?.split_whitespace().collect();
    let utime: f64 = rest.get(11)?.parse().ok()?;
    let stime: f64 = rest.get(12)?.parse().ok()?;
    Some((name, (utime + stime) / TICKS))
}

/// CPU seconds used so far by this process (all threads); 0 where `/proc` is missing.
pub fn own_seconds() -> f64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|l| parse_stat(&l))
        .map_or(0.0, |(_, s)| s)
}

/// CPU seconds used so far by the live processes whose command name is `name` (e.g.
/// `postgres`: the server and its backends). A backend that exits between two readings takes
/// its time with it, so measure with long-lived connections.
pub fn seconds_of(name: &str) -> f64 {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|l| parse_stat(&l))
        .filter(|(n, _)| n == name)
        .map(|(_, s)| s)
        .sum()
}

/// CPU used by this process and by the processes named `server` between `start` and `stop`.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    own: f64,
    server: f64,
}

impl Usage {
    /// Reads both counters now.
    pub fn now(server: &str) -> Usage {
        Usage {
            own: own_seconds(),
            server: seconds_of(server),
        }
    }

    /// Microseconds of CPU per item since `self`, for this process and for the server.
    pub fn per_item_since(&self, server: &str, items: u64) -> (f64, f64) {
        let now = Usage::now(server);
        let n = items.max(1) as f64;
        (
            (now.own - self.own) * 1e6 / n,
            (now.server - self.server).max(0.0) * 1e6 / n,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_spaces_in_the_name() {
        let line = "42 (post gres) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 100 0 0";
        let (name, secs) = parse_stat(line).expect("parses");
        assert_eq!(name, "post gres");
        assert!((secs - 3.0).abs() < 1e-9, "{secs}");
    }

    #[test]
    fn own_time_grows_with_work() {
        // Spin until the counter moves (one tick is 10 ms of CPU), for at most 10 s of wall
        // time: a counter that never moves fails.
        let before = own_seconds();
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while own_seconds() <= before && start.elapsed() < std::time::Duration::from_secs(10) {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        assert!(
            own_seconds() > before,
            "10 s of spinning never showed in /proc/self/stat"
        );
    }
}
