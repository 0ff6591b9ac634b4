//! One consumer process: spawned in its own process group, told to die with the harness, and
//! signalled as a group so that anything it forks goes with it.
//!
//! Every live group is also listed in a process-wide registry, so that the last-resort paths
//! (a panic, an error return) can kill them all without knowing about the supervisor.

use std::collections::HashSet;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Process groups of consumers that may still be alive.
static LIVE_GROUPS: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn registry() -> std::sync::MutexGuard<'static, Option<HashSet<i32>>> {
    LIVE_GROUPS.lock().unwrap_or_else(|p| p.into_inner())
}

/// SIGKILLs every consumer process group still registered. Safe to call at any time, twice.
pub fn kill_all_groups() {
    let groups: Vec<i32> = registry()
        .as_ref()
        .map(|g| g.iter().copied().collect())
        .unwrap_or_default();
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// A spawned incarnation whose process group is registered until it is reaped.
pub struct ConsumerProcess {
    /// The child (its pid is also its process group id).
    pub child: Child,
    /// Process id and group id.
    pub pid: u32,
}

impl ConsumerProcess {
    /// Spawns `argv` in a new process group with `env`, stdout/stderr piped, stdin closed.
    pub fn spawn(
        argv: &[String],
        env: &[(String, String)],
        cwd: Option<&Path>,
    ) -> io::Result<ConsumerProcess> {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        let parent = std::process::id() as i32;
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (prctl, getppid, _exit).
        unsafe {
            cmd.pre_exec(move || {
                // Die with the harness even if it is SIGKILLed and cannot clean up.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The harness may have died between fork and prctl.
                if libc::getppid() != parent {
                    libc::_exit(137);
                }
                mark_inherited_fds_cloexec();
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child.id().expect("a just-spawned child has a pid");
        registry()
            .get_or_insert_with(HashSet::new)
            .insert(pid as i32);
        Ok(ConsumerProcess { child, pid })
    }

    /// Waits for the process to exit and unregisters its group.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await;
        // The leader is gone; anything left in its group is killed now.
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        if let Some(g) = registry().as_mut() {
            g.remove(&(self.pid as i32));
        }
        status
    }
}

/// Makes every descriptor above stderr close on exec, in the forked child. Libraries in the
/// harness (librdkafka's mock cluster among them) open sockets and pipes without O_CLOEXEC; a
/// consumer that inherited them would hold the harness's connections open. Marking rather
/// than closing keeps std's own exec-error pipe working. Async-signal-safe.
fn mark_inherited_fds_cloexec() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: plain syscalls on descriptor numbers; no memory is touched.
    unsafe {
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) == 0 {
            return;
        }
        // Kernels before 5.11: walk the descriptor table.
        let max = match libc::sysconf(libc::_SC_OPEN_MAX) {
            n if n > 0 => n.min(65536) as libc::c_int,
            _ => 4096,
        };
        for fd in 3..max {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Sends `signal` to the process group `pgid`; false if no such group is left.
pub fn signal_group(pgid: u32, signal: Signal) -> bool {
    killpg(Pid::from_raw(pgid as i32), signal).is_ok()
}

/// `exit 0`, `signal SIGKILL`...
pub fn describe_status(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exit {code}")
    } else if let Some(sig) = status.signal() {
        match Signal::try_from(sig) {
            Ok(s) => format!("signal {}", s.as_str()),
            Err(_) => format!("signal {sig}"),
        }
    } else {
        "unknown".into()
    }
}
