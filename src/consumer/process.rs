//! One consumer process: spawned in its own process group, told to die with the harness, and
//! contained (see [`super::containment`]): signalled with everything it started, whatever
//! session or group that moved to, and not over until all of it is gone.
//!
//! Every live incarnation is also registered process-wide, so that the last-resort paths (a
//! panic, an error return, a second Ctrl-C) can kill them all without knowing about the
//! supervisor.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::process::{Child, Command};

use super::containment::{self, Cell};
use crate::timeline::{Event, Timeline};

/// SIGKILLs every consumer process still contained (and, in `exactly run`, every process
/// carrying the harness's marker). Safe to call at any time, twice.
pub fn kill_all_groups() {
    containment::kill_all();
}

/// A spawned incarnation, contained until it is reaped.
pub struct ConsumerProcess {
    /// The child (its pid is also its process group id).
    pub child: Child,
    /// Process id and group id.
    pub pid: u32,
    cell: Arc<Cell>,
    /// (instance, incarnation).
    who: (u32, u32),
    timeline: Timeline,
}

impl ConsumerProcess {
    /// Spawns `argv` in a new process group with `env`, stdout/stderr piped, stdin closed, as
    /// incarnation `who` = (instance, incarnation), contained; what containment has to say
    /// (an incarnation that could not join its cgroup, what it left behind) goes on `timeline`.
    pub fn spawn(
        argv: &[String],
        env: &[(String, String)],
        cwd: Option<&Path>,
        who: (u32, u32),
        timeline: &Timeline,
    ) -> io::Result<ConsumerProcess> {
        let contained = containment::prepare(who.0, who.1);
        let (mark, mark_value) = contained.mark();
        let cgroup_fd = contained.cgroup_fd();
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(mark, mark_value)
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
        // async-signal-safe calls (prctl, getppid, _exit, write, fcntl).
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
                // Into the incarnation's cgroup before the consumer can start anything.
                containment::join_in_child(cgroup_fd);
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child.id().expect("a just-spawned child has a pid");
        let (cell, problem) = contained.register(pid);
        if let Some(problem) = problem {
            timeline.record(Event::Warning {
                message: format!(
                    "consumer[{}] incarnation {}: no cgroup ({problem}); contained by its \
                     process tree and marker variable only",
                    who.0, who.1
                ),
            });
        }
        Ok(ConsumerProcess {
            child,
            pid,
            cell,
            who,
            timeline: timeline.clone(),
        })
    }

    /// Waits for the process to exit, then ends what it left behind (SIGTERM, a grace,
    /// SIGKILL; each process on the timeline) and forgets the incarnation: it is over when all
    /// of it is gone.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await;
        let swept = containment::end(&self.cell, containment::LEFTOVER_GRACE).await;
        self.timeline
            .record_many(swept.events(self.who.0, self.who.1));
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

/// Sends `signal` to the incarnation whose first process is `pgid`: its process group and
/// every process of it that left the group (another session, a daemon); false if nothing of
/// it is left.
pub fn signal_group(pgid: u32, signal: Signal) -> bool {
    containment::signal(pgid, signal)
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
