//! Lease holder names that say where their process runs, so that a refresher on the same host
//! can tell that the holder of a lease is gone and take the lease over instead of waiting for it
//! to lapse.
//!
//! A default holder name reads `sfauth:{host}:{pid}:{start}:{random}`, where `start` is the
//! process's start time in clock ticks since boot (Linux `/proc/{pid}/stat`, field 22). The start
//! time guards against a recycled process id: a live process with the same id but another start
//! time is not the holder. Names set by the application (`TokenManagerBuilder::holder`) are not
//! in this form; their leases are simply waited out.

use std::sync::OnceLock;

const PREFIX: &str = "sfauth";

/// This process's host name and start time, read once.
struct Me {
    host: String,
    start: Option<u64>,
}

fn me() -> &'static Me {
    static ME: OnceLock<Me> = OnceLock::new();
    ME.get_or_init(|| Me {
        host: host_name(),
        start: start_time(std::process::id()),
    })
}

/// A new holder name for a manager of this process.
pub(crate) fn new_holder() -> String {
    let me = me();
    format!(
        "{PREFIX}:{}:{}:{}:{:016x}",
        me.host,
        std::process::id(),
        me.start.unwrap_or(0),
        rand::random::<u64>()
    )
}

/// The parts of a holder name made by [`new_holder`].
#[derive(Debug, PartialEq, Eq)]
struct Parsed<'a> {
    host: &'a str,
    pid: u32,
    start: u64,
}

fn parse(holder: &str) -> Option<Parsed<'_>> {
    // The host name cannot contain ':' (it is a DNS label list), so splitting from the right
    // keeps the parse unambiguous.
    let mut parts = holder.rsplitn(5, ':');
    let _random = parts.next()?;
    let start = parts.next()?.parse().ok()?;
    let pid = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    let (prefix, host) = (parts.next()?, rest);
    (prefix == PREFIX).then_some(Parsed { host, pid, start })
}

/// Whether `holder` names a process on this host that no longer runs: a lease it holds can be
/// taken over at once. `false` whenever that cannot be known for sure (another host, a name in
/// another form, a platform without `/proc`).
pub(crate) fn is_gone(holder: &str) -> bool {
    let Some(parsed) = parse(holder) else {
        return false;
    };
    let me = me();
    if parsed.host != me.host || me.start.is_none() {
        return false;
    }
    if parsed.pid == std::process::id() {
        // A manager of this very process: alive by definition (and its lease is released by
        // the manager itself when its refresh ends).
        return false;
    }
    match start_time(parsed.pid) {
        None => !std::path::Path::new(&format!("/proc/{}", parsed.pid)).exists(),
        Some(start) => start != parsed.start,
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "host".to_owned())
        .replace(':', "_")
}

/// A process's start time in clock ticks after boot, from `/proc/{pid}/stat`; `None` where that
/// cannot be read (no such process, no procfs).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces and ')'; the
    // fields after the last ')' are plain numbers, and the start time is the 20th of them.
    let after = stat.get(stat.rfind(')')?.checked_add(1)?..)?;
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_names_parse_back() {
        let name = new_holder();
        let parsed = parse(&name).unwrap();
        assert_eq!(parsed.pid, std::process::id());
        assert_eq!(parsed.host, me().host);
        assert!(!is_gone(&name), "this process is alive");
    }

    #[test]
    fn foreign_names_are_never_gone() {
        for name in [
            "",
            "worker-1",
            "host-12-abcdef",
            "other:1:2:3:4",
            "sfauth:x:y:z:w",
        ] {
            assert!(!is_gone(name), "{name}");
        }
        let elsewhere = format!("sfauth:not-{}:1:1:00", me().host);
        assert!(!is_gone(&elsewhere));
    }

    #[test]
    fn a_finished_process_on_this_host_is_gone() {
        if me().start.is_none() {
            eprintln!("no procfs here: take-over detection is off, nothing to test");
            return;
        }
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = start_time(pid);
        child.wait().unwrap();
        let name = format!("{PREFIX}:{}:{pid}:{}:00", me().host, start.unwrap_or(1));
        assert!(is_gone(&name));
    }

    #[cfg(unix)]
    #[test]
    fn a_recycled_pid_is_not_the_holder() {
        if me().start.is_none() {
            return;
        }
        // Our own parent is alive, but a holder that claims its pid with another start time is
        // a process that died and whose pid was reused.
        let parent = std::os::unix::process::parent_id();
        let start = start_time(parent).unwrap();
        let alive = format!("{PREFIX}:{}:{parent}:{start}:00", me().host);
        let recycled = format!("{PREFIX}:{}:{parent}:{}:00", me().host, start + 1);
        assert!(!is_gone(&alive));
        assert!(is_gone(&recycled));
    }
}
