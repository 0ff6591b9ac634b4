//! Containment: every process a consumer incarnation starts is found, signalled and ended with
//! it, whatever session or process group it moves to (a launcher that `setsid`s the real
//! consumer, a daemonizing wrapper, a container client).
//!
//! Three nets, used together:
//! - **a cgroup v2 per incarnation** (`<the harness's cgroup>/exactly-<token>/<n>-<i>-<j>`),
//!   joined by the child before it execs the consumer: nothing it starts can leave it, and
//!   `cgroup.kill` ends them all. Used when the cgroup v2 hierarchy is mounted and writable
//!   (a probe at first use says so), unless `EXACTLY_CGROUPS=off`;
//! - **the harness as child subreaper** (`PR_SET_CHILD_SUBREAPER`): a descendant whose parent
//!   died re-parents to the harness instead of init, so it stays in the harness's process
//!   tree and the harness reaps it;
//! - **a marker variable** (`EXACTLY_CONTAINMENT=<token>/<n>/<instance>/<incarnation>`) that
//!   every descendant inherits unless it clears its environment: `/proc/PID/environ` names
//!   the incarnation of a process whose parent chain is gone.
//!
//! An incarnation's members are the union: its cgroup's processes, the process tree under
//! its first process (the one the harness started, the *leader*), and the processes carrying
//! its marker. Signals (faults, the run's stop) go to the leader's process group and to every
//! member outside it, found without reading every process of the system (a fault counts as
//! fired only once they are signalled): the cgroup's list, else the harness's own descendants
//! (see [`family_snapshot`]). Once the leader has exited, what is left gets SIGTERM, a grace, then
//! SIGKILL, and is reaped ([`end`]); a process still alive after that *survived* and is
//! reported as such (the run then says so).
//!
//! When the harness itself dies (SIGKILL included, when nothing of it can run), a guardian
//! process (`exactly guard`, started by `exactly run` before anything else, see
//! [`start_guardian`]) sees its pipe from the harness close and kills every process in the
//! harness's cgroups and every process carrying its token.
//!
//! Limit: without a cgroup, a descendant that both clears its environment and loses its
//! parent (a double fork) is attributed to no incarnation while the harness runs; `exactly
//! run`, whose only children are consumers, kills such processes at its end (and the guardian
//! cannot see them).
//!
//! Invariant: processes vanish mid-scan; every read that fails means "not this one".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;

use crate::procfs::{self, StatFields};
use crate::timeline::{ContainmentMethod, DescendantFate, Event};

/// The variable every consumer process inherits: `<token>/<n>/<instance>/<incarnation>`.
pub const MARK_VAR: &str = "EXACTLY_CONTAINMENT";
/// Set to `off` to contain without cgroups (the subreaper and the marker only).
pub const CGROUPS_SWITCH: &str = "EXACTLY_CGROUPS";
/// How long a process left after its leader exited gets between SIGTERM and SIGKILL.
pub const LEFTOVER_GRACE: Duration = Duration::from_secs(2);
/// How long a SIGKILLed process may take to be gone before it counts as having survived.
const KILL_WAIT: Duration = Duration::from_secs(2);
/// How long the guardian keeps killing after the harness died.
const GUARD_WAIT: Duration = Duration::from_secs(5);
/// Between two looks at `/proc`.
const POLL: Duration = Duration::from_millis(50);

fn proc_root() -> &'static Path {
    Path::new("/proc")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What this harness process contains with, decided once at first use.
struct Harness {
    /// Unique to this harness process: `<pid>-<start time in ns>`.
    token: String,
    /// Whether the harness is the child subreaper, or why not.
    subreaper: Result<(), String>,
    /// This harness's cgroup folder (`…/exactly-<token>`), or why there is none.
    cgroups: Result<PathBuf, String>,
    /// Incarnations contained so far (numbers the markers and cgroups).
    next: AtomicU64,
    /// The guardian's pid (0: none).
    guardian: AtomicU32,
    /// Why there is no guardian (`None` while none was asked for).
    guardian_note: Mutex<Option<String>>,
    /// Every child of this process is a consumer's (true in `exactly run`): a child nobody
    /// claims is a consumer's orphan and is killed at the end.
    owns_children: AtomicBool,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();
/// The incarnations whose leader has not been reaped yet, by leader pid.
static CELLS: Mutex<BTreeMap<u32, Arc<Cell>>> = Mutex::new(BTreeMap::new());
/// The write end of the guardian's pipe, held until this process dies.
static GUARDIAN_PIPE: OnceLock<std::process::ChildStdin> = OnceLock::new();

fn harness() -> &'static Harness {
    HARNESS.get_or_init(|| {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let token = format!("{}-{started}", std::process::id());
        let subreaper = nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| format!("PR_SET_CHILD_SUBREAPER failed: {e}"));
        let cgroups = make_cgroup_root(&token);
        Harness {
            token,
            subreaper,
            cgroups,
            next: AtomicU64::new(1),
            guardian: AtomicU32::new(0),
            guardian_note: Mutex::new(None),
            owns_children: AtomicBool::new(false),
        }
    })
}

/// The harness's cgroup folder, made and proven joinable, or why not.
fn make_cgroup_root(token: &str) -> Result<PathBuf, String> {
    if std::env::var(CGROUPS_SWITCH).is_ok_and(|v| v == "off") {
        return Err(format!("cgroups turned off ({CGROUPS_SWITCH}=off)"));
    }
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let parent = own_cgroup_dir(&own, &mounts)
        .ok_or("no cgroup v2 hierarchy is mounted for this process")?;
    let root = parent.join(format!("exactly-{token}"));
    std::fs::create_dir(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    match probe_join(&root) {
        Ok(()) => Ok(root),
        Err(e) => {
            let _ = std::fs::remove_dir(&root);
            Err(e)
        }
    }
}

/// The folder of this process's cgroup v2, from `/proc/self/cgroup` (the `0::PATH` line) and
/// `/proc/self/mountinfo` (where the `cgroup2` file system is mounted, and which of its
/// folders the mount shows).
pub fn own_cgroup_dir(cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    mountinfo.lines().find_map(|line| {
        let (mount, fs) = line.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut fields = mount.split_whitespace().skip(3);
        let (root, point) = (fields.next()?, fields.next()?);
        let inside = if root == "/" {
            path
        } else {
            path.strip_prefix(root)?
        };
        Some(Path::new(point).join(inside.trim_start_matches('/')))
    })
}

/// Proves a child can join a cgroup under `root`: a forked child joins `root/probe` and
/// exits 0 before it would exec (1 when the kernel refused).
fn probe_join(root: &Path) -> Result<(), String> {
    let dir = root.join("probe");
    std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let result = (|| {
        let procs = open_procs(&dir)?;
        let fd = procs.as_raw_fd();
        let mut cmd = std::process::Command::new("/bin/true");
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (write, _exit).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                libc::_exit(if join_cgroup(fd) { 0 } else { 1 })
            });
        }
        let status = cmd
            .status()
            .map_err(|e| format!("cannot fork a probe: {e}"))?;
        match status.code() {
            Some(0) => Ok(()),
            _ => Err(format!("a child cannot join {}", dir.display())),
        }
    })();
    let _ = std::fs::remove_dir(&dir);
    result
}

fn open_procs(dir: &Path) -> Result<File, String> {
    File::options()
        .write(true)
        .open(dir.join("cgroup.procs"))
        .map_err(|e| format!("cannot open {}/cgroup.procs: {e}", dir.display()))
}

/// Moves the calling process into the cgroup whose `cgroup.procs` is open on `fd` ("0" means
/// the writer). Async-signal-safe: for a forked child before exec.
fn join_cgroup(fd: RawFd) -> bool {
    // SAFETY: a plain write of a static buffer to a descriptor.
    unsafe { libc::write(fd, b"0".as_ptr().cast(), 1) == 1 }
}

/// What an incarnation about to be spawned needs: its marker, and its cgroup when there is one.
pub struct Prepared {
    mark: String,
    /// The incarnation's cgroup folder and its open `cgroup.procs`.
    cgroup: Option<(PathBuf, File)>,
    /// Why this incarnation has no cgroup although the harness has them.
    cgroup_problem: Option<String>,
}

/// Prepares the containment of one incarnation: a fresh marker, and a fresh cgroup when the
/// harness has them.
pub fn prepare(instance: u32, incarnation: u32) -> Prepared {
    let h = harness();
    let n = h.next.fetch_add(1, Ordering::Relaxed);
    let mark = format!("{}/{n}/{instance}/{incarnation}", h.token);
    let (cgroup, cgroup_problem) = match &h.cgroups {
        Err(_) => (None, None),
        Ok(root) => {
            let dir = root.join(format!("{n}-{instance}-{incarnation}"));
            match std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))
                .and_then(|()| open_procs(&dir))
            {
                Ok(file) => (Some((dir, file)), None),
                Err(e) => (None, Some(e)),
            }
        }
    };
    Prepared {
        mark,
        cgroup,
        cgroup_problem,
    }
}

impl Prepared {
    /// The marker variable and its value, for the child's environment.
    pub fn mark(&self) -> (&'static str, &str) {
        (MARK_VAR, &self.mark)
    }

    /// The descriptor the child writes to join its cgroup before exec (see [`join_in_child`]).
    pub fn cgroup_fd(&self) -> Option<RawFd> {
        self.cgroup.as_ref().map(|(_, f)| f.as_raw_fd())
    }

    /// Registers the spawned leader `pid`; returns the incarnation's cell and, when it could
    /// not be put in its cgroup, why (it is then contained by the `/proc` walk only).
    pub fn register(self, pid: u32) -> (Arc<Cell>, Option<String>) {
        let mut problem = self.cgroup_problem;
        let cgroup = self.cgroup.and_then(|(dir, _)| {
            if cgroup_pids(&dir).contains(&pid) {
                Some(dir)
            } else {
                let _ = std::fs::remove_dir(&dir);
                problem = Some(format!("process {pid} did not join {}", dir.display()));
                None
            }
        });
        let cell = Arc::new(Cell {
            leader: pid,
            mark: format!("{MARK_VAR}={}", self.mark),
            cgroup,
            seen: Mutex::default(),
            signalled: Mutex::default(),
        });
        lock(&CELLS).insert(pid, cell.clone());
        (cell, problem)
    }
}

/// In the forked child, before exec: joins the incarnation's cgroup (a failure is found by
/// [`Prepared::register`], which looks). Async-signal-safe.
pub fn join_in_child(fd: Option<RawFd>) {
    if let Some(fd) = fd {
        join_cgroup(fd);
    }
}

/// One incarnation's containment: its leader, marker and cgroup, and every member seen.
pub struct Cell {
    leader: u32,
    /// `EXACTLY_CONTAINMENT=<value>`, as an environment entry.
    mark: String,
    cgroup: Option<PathBuf>,
    /// Members found once the leader had exited, with their command names: what it left.
    seen: Mutex<HashMap<u32, String>>,
    /// Members outside the leader's group that a signal reached while it lived: when they die
    /// as orphans of the harness, [`Cell::reap`] waits for them.
    signalled: Mutex<HashSet<u32>>,
}

/// The processes of the system, as `/proc/*/stat` shows them.
type Snapshot = HashMap<u32, StatFields>;

fn snapshot() -> Snapshot {
    let proc = proc_root();
    procfs::pids(proc)
        .into_iter()
        .filter_map(|pid| Some((pid, procfs::stat_fields(proc, pid)?)))
        .collect()
}

/// The harness's own descendants, with their stat fields: what a signal needs to look at.
///
/// With the harness as child subreaper this holds every member of every incarnation: a
/// consumer's process stays under the harness in the parent tree (an orphan re-parents to the
/// harness, not init), and a process carrying a marker inherited it from such a process. It
/// reads a handful of processes where [`snapshot`] reads every process of the system (most of
/// a fault's trigger latency, ~0.5 ms, when it did). A process re-parented to the harness
/// while the walk runs can be missed; the incarnation's cgroup, when there is one, still
/// names it. `None` without the subreaper or the kernel's `children` files: read all of
/// `/proc` then.
fn family_snapshot() -> Option<Snapshot> {
    if HARNESS.get().is_none_or(|h| h.subreaper.is_err()) {
        return None;
    }
    let proc = proc_root();
    let me = std::process::id();
    let mut stack = procfs::children(proc, me)?;
    let mut snap = Snapshot::new();
    while let Some(pid) = stack.pop() {
        if snap.contains_key(&pid) {
            continue;
        }
        let Some(st) = procfs::stat_fields(proc, pid) else {
            continue;
        };
        snap.insert(pid, st);
        stack.extend(procfs::children(proc, pid).unwrap_or_default());
    }
    Some(snap)
}

/// The pids in a cgroup folder and every folder under it.
fn cgroup_pids(dir: &Path) -> HashSet<u32> {
    let mut out: HashSet<u32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for sub in subfolders(dir) {
        out.extend(cgroup_pids(&sub));
    }
    out
}

/// The folders in a cgroup folder. A cgroup folder's link count is 2 plus its subfolders
/// (kernfs keeps it so), which spares listing its ~30 control files when it has none: this is
/// on the path of every signal.
fn subfolders(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata(dir).is_ok_and(|m| m.nlink() == 2) {
        return Vec::new();
    }
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Every process under `root` in the parent tree of `snap` (not `root` itself).
fn tree_under(snap: &Snapshot, root: u32) -> HashSet<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (pid, st) in snap {
        children.entry(st.ppid).or_default().push(*pid);
    }
    let mut out = HashSet::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for c in children.get(&p).into_iter().flatten() {
            if out.insert(*c) {
                stack.push(*c);
            }
        }
    }
    out
}

/// Processes the harness must never count as a consumer's: itself and its guardian. (Never
/// sets the harness up: the guardian calls it too.)
fn is_harness_own(pid: u32) -> bool {
    pid == std::process::id()
        || HARNESS
            .get()
            .is_some_and(|h| pid == h.guardian.load(Ordering::Relaxed))
}

impl Cell {
    /// The incarnation's live members besides the leader: its cgroup's processes, its process
    /// tree, and the processes carrying its marker. Zombies are not members (they are dead).
    fn members(&self, snap: &Snapshot) -> Vec<u32> {
        let mut found = tree_under(snap, self.leader);
        if let Some(dir) = &self.cgroup {
            found.extend(cgroup_pids(dir));
        }
        let proc = proc_root();
        for (pid, st) in snap {
            if !st.exited()
                && !found.contains(pid)
                && procfs::environ_has(proc, *pid, |e| e == self.mark.as_bytes())
            {
                found.insert(*pid);
            }
        }
        let mut live: Vec<u32> = found
            .into_iter()
            .filter(|p| *p != self.leader && !is_harness_own(*p))
            .filter(|p| snap.get(p).is_some_and(|st| !st.exited()))
            .collect();
        live.sort_unstable();
        live
    }

    /// Notes `pids` as left behind by the leader, with their command names (read now, while
    /// they are alive).
    fn note_left(&self, pids: &[u32]) {
        let mut seen = lock(&self.seen);
        for pid in pids {
            seen.entry(*pid)
                .or_insert_with(|| procfs::command_name(proc_root(), *pid).unwrap_or_default());
        }
    }

    /// Sends `signal` to the leader's process group and to every member outside it; false
    /// when nothing was there to receive it.
    fn signal(&self, signal: Signal) -> bool {
        let mut hit = killpg(Pid::from_raw(self.leader as i32), signal).is_ok();
        for (pid, st) in self.signal_targets() {
            if st.pgrp != self.leader {
                hit |= kill(Pid::from_raw(pid as i32), signal).is_ok();
                lock(&self.signalled).insert(pid);
            }
        }
        hit
    }

    /// The live members besides the leader, found the cheap way, since a fault counts as fired
    /// only once they are signalled: the incarnation's cgroup when it has one (nothing its
    /// processes start can leave it, short of a privileged process moving one out; [`end`]
    /// still looks everywhere), else the harness's family ([`family_snapshot`]), else all of
    /// `/proc`.
    fn signal_targets(&self) -> Vec<(u32, StatFields)> {
        let Some(dir) = &self.cgroup else {
            let snap = family_snapshot().unwrap_or_else(snapshot);
            return self
                .members(&snap)
                .into_iter()
                .map(|p| (p, snap[&p]))
                .collect();
        };
        cgroup_pids(dir)
            .into_iter()
            .filter(|p| *p != self.leader && !is_harness_own(*p))
            .filter_map(|p| Some((p, procfs::stat_fields(proc_root(), p)?)))
            .filter(|(_, st)| !st.exited())
            .collect()
    }

    /// SIGKILLs every member (and the whole cgroup); returns the members it found.
    fn kill_members(&self) -> Vec<u32> {
        if let Some(dir) = &self.cgroup {
            kill_cgroup(dir);
        }
        let _ = killpg(Pid::from_raw(self.leader as i32), Signal::SIGKILL);
        let members = self.members(&snapshot());
        for pid in &members {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        members
    }

    /// Reaps the members left or signalled that died as children of the harness (orphans
    /// re-parented to it). Only pids the cell knows are waited for, never another child of the
    /// harness.
    fn reap(&self) {
        let me = std::process::id();
        let mut known: Vec<u32> = lock(&self.seen).keys().copied().collect();
        known.extend(lock(&self.signalled).iter().copied());
        for pid in known {
            if procfs::stat_fields(proc_root(), pid).is_some_and(|st| st.ppid == me && st.exited())
            {
                let _ = waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG));
            }
        }
    }
}

/// Writes `1` to the cgroup's `cgroup.kill` (Linux 5.14+), and SIGKILLs what `cgroup.procs`
/// lists in case the kernel has no `cgroup.kill`.
fn kill_cgroup(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
    for pid in cgroup_pids(dir) {
        if !is_harness_own(pid) {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// Removes a cgroup folder and the folders under it, deepest first (only empty ones go);
/// true when it is gone.
fn remove_cgroup(dir: &Path) -> bool {
    for sub in subfolders(dir) {
        remove_cgroup(&sub);
    }
    std::fs::remove_dir(dir).is_ok() || !dir.exists()
}

/// The kernel refuses to remove a cgroup (EBUSY) until its killed processes have finished
/// exiting, a moment after they left `cgroup.procs`: tries for up to [`KILL_WAIT`].
async fn remove_cgroup_soon(dir: &Path) {
    let deadline = Instant::now() + KILL_WAIT;
    while !remove_cgroup(dir) && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
}

/// Removes the harness's cgroup folder once every incarnation's folder is gone (it is made
/// again by the next incarnation).
fn remove_cgroup_root() {
    if let Some(Ok(root)) = HARNESS.get().map(|h| &h.cgroups) {
        let _ = std::fs::remove_dir(root);
    }
}

/// Sends `signal` to the incarnation whose leader is `leader`: its process group and every
/// member that left it. For a leader the harness does not contain, its process group only.
/// False when nothing was there to receive it.
pub fn signal(leader: u32, signal: Signal) -> bool {
    let cell = lock(&CELLS).get(&leader).cloned();
    match cell {
        Some(cell) => cell.signal(signal),
        None => killpg(Pid::from_raw(leader as i32), signal).is_ok(),
    }
}

/// What [`end`] did with the processes an incarnation left behind.
#[derive(Debug, Default)]
pub struct Swept {
    /// (pid, command) of each process it ended.
    pub ended: Vec<(u32, String)>,
    /// (pid, command) of each process still alive after SIGKILL.
    pub survived: Vec<(u32, String)>,
}

impl Swept {
    /// The timeline's account: a `descendant` event per process, and a warning per survivor.
    pub fn events(&self, instance: u32, incarnation: u32) -> Vec<Event> {
        let event = |(pid, command): &(u32, String), fate| Event::Descendant {
            instance,
            incarnation,
            pid: *pid,
            command: command.clone(),
            fate,
        };
        let mut out: Vec<Event> = self
            .ended
            .iter()
            .map(|p| event(p, DescendantFate::Ended))
            .collect();
        for p in &self.survived {
            out.push(event(p, DescendantFate::Survived));
            out.push(Event::Warning {
                message: format!(
                    "consumer[{instance}] incarnation {incarnation}: process {} (`{}`) could not \
                     be ended (still alive after SIGKILL); it may go on consuming after the run, \
                     so the evidence is not the run's alone",
                    p.0, p.1
                ),
            });
        }
        out
    }
}

/// Ends what the incarnation left once its leader has exited: SIGCONT and SIGTERM to every
/// member, `grace` for them to go, then SIGKILL, and reaps them; removes its cgroup; forgets
/// the incarnation. Returns who was ended and who survived.
pub async fn end(cell: &Cell, grace: Duration) -> Swept {
    let mut left = cell.members(&snapshot());
    cell.note_left(&left);
    if !left.is_empty() {
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGCONT);
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
        }
        left = wait_members(cell, grace).await;
    }
    if !left.is_empty() {
        cell.kill_members();
        left = wait_members_killed(cell).await;
    }
    cell.reap();
    if let Some(dir) = &cell.cgroup {
        if left.is_empty() {
            remove_cgroup_soon(dir).await;
        }
    }
    let last = {
        let mut cells = lock(&CELLS);
        cells.remove(&cell.leader);
        cells.is_empty()
    };
    if last {
        remove_cgroup_root();
    }
    let seen = lock(&cell.seen);
    let named = |pid: &u32| (*pid, seen.get(pid).cloned().unwrap_or_default());
    let mut ended: Vec<(u32, String)> = seen
        .keys()
        .filter(|p| !left.contains(p))
        .map(named)
        .collect();
    ended.sort();
    Swept {
        ended,
        survived: left.iter().map(named).collect(),
    }
}

/// Polls until the cell has no live member or `limit` passed; returns the members left.
async fn wait_members(cell: &Cell, limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        cell.reap();
        let left = cell.members(&snapshot());
        cell.note_left(&left);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Like [`wait_members`] after SIGKILL, killing again whatever shows up meanwhile (a member
/// forked between two looks).
async fn wait_members_killed(cell: &Cell) -> Vec<u32> {
    let deadline = Instant::now() + KILL_WAIT;
    loop {
        tokio::time::sleep(POLL).await;
        cell.reap();
        let left = cell.kill_members();
        cell.note_left(&left);
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
    }
}

/// Last resort (the end of `exactly run`, a panic, a second Ctrl-C): SIGKILLs every contained
/// incarnation now, and in `exactly run` every process carrying this harness's token and every
/// child of it nobody claims (a consumer's orphan). Safe to call at any time, twice; never
/// blocks on a lock a panicking thread may hold.
pub fn kill_all() {
    let cells: Vec<Arc<Cell>> = match CELLS.try_lock() {
        Ok(cells) => cells.values().cloned().collect(),
        Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner().values().cloned().collect(),
        Err(std::sync::TryLockError::WouldBlock) => Vec::new(),
    };
    for cell in &cells {
        cell.kill_members();
    }
    let Some(h) = HARNESS.get() else {
        return;
    };
    remove_cgroup_root();
    if !h.owns_children.load(Ordering::Relaxed) {
        return;
    }
    if let Ok(root) = &h.cgroups {
        kill_cgroup_tree(root);
    }
    let me = std::process::id();
    let snap = snapshot();
    for (pid, st) in &snap {
        if is_harness_own(*pid) || st.exited() {
            continue;
        }
        if st.ppid == me || carries_token(*pid, &h.token) {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
    }
}

/// `cgroup.kill` on a folder and on each folder under it.
fn kill_cgroup_tree(dir: &Path) {
    kill_cgroup(dir);
    for sub in subfolders(dir) {
        kill_cgroup_tree(&sub);
    }
}

fn carries_token(pid: u32, token: &str) -> bool {
    let prefix = format!("{MARK_VAR}={token}/");
    procfs::environ_has(proc_root(), pid, |e| e.starts_with(prefix.as_bytes()))
}

/// The timeline's `containment` event: the method in force and what backs it.
pub fn describe() -> Event {
    let h = harness();
    let (method, how) = match &h.cgroups {
        Ok(root) => (
            ContainmentMethod::Cgroup,
            format!("a cgroup per incarnation under {}", root.display()),
        ),
        Err(why) => (
            ContainmentMethod::Subreaper,
            format!("no cgroup ({why}); the incarnation's process tree and marker variable ({MARK_VAR}) walked in /proc"),
        ),
    };
    let reaper = match &h.subreaper {
        Ok(()) => "the harness is the child subreaper".to_owned(),
        Err(e) => {
            format!("the harness is not the child subreaper ({e}): an orphan re-parents to init")
        }
    };
    let guardian = match h.guardian.load(Ordering::Relaxed) {
        0 => lock(&h.guardian_note).clone().unwrap_or_else(|| {
            "no guardian: a harness killed by SIGKILL leaves what left the process group".into()
        }),
        pid => format!("a guardian (pid {pid}) ends them if the harness dies"),
    };
    Event::Containment {
        method,
        detail: format!("{how}; {reaper}; {guardian}"),
    }
}

/// Starts the guardian (`exe guard --token T [--cgroup DIR]`) and marks every child of this
/// process as a consumer's. Call once, early in `exactly run`, before any consumer starts.
pub fn start_guardian(exe: io::Result<PathBuf>) {
    use std::os::unix::process::CommandExt;
    let h = harness();
    h.owns_children.store(true, Ordering::Relaxed);
    let spawned = exe.and_then(|exe| {
        let mut cmd = std::process::Command::new(exe);
        cmd.args(["guard", "--token", &h.token]);
        if let Ok(root) = &h.cgroups {
            cmd.arg("--cgroup").arg(root);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            // Out of the terminal's foreground group: a Ctrl-C is the harness's to handle.
            .process_group(0)
            .spawn()
    });
    match spawned {
        Ok(mut child) => {
            h.guardian.store(child.id(), Ordering::Relaxed);
            if let Some(pipe) = child.stdin.take() {
                let _ = GUARDIAN_PIPE.set(pipe);
            }
        }
        Err(e) => {
            *lock(&h.guardian_note) = Some(format!(
                "no guardian ({e}): a harness killed by SIGKILL leaves what left the process group"
            ));
        }
    }
}

/// The guardian's life (`exactly guard`): waits for the harness to end (its stdin closes),
/// then for a few seconds kills every process in `cgroup` and every process carrying `token`,
/// and removes the cgroup folders. Returns the exit code.
pub fn guard(token: &str, cgroup: Option<&Path>) -> i32 {
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: installing SIG_IGN runs no code in the handler.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
    }
    let _ = io::copy(&mut io::stdin().lock(), &mut io::sink());
    let deadline = Instant::now() + GUARD_WAIT;
    loop {
        if let Some(dir) = cgroup {
            kill_cgroup_tree(dir);
        }
        let me = std::process::id();
        let marked: Vec<u32> = snapshot()
            .into_iter()
            .filter(|(pid, st)| *pid != me && !st.exited() && carries_token(*pid, token))
            .map(|(pid, _)| pid)
            .collect();
        for pid in &marked {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        let in_cgroup = cgroup.is_some_and(|d| !cgroup_pids(d).is_empty());
        if (marked.is_empty() && !in_cgroup) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    if let Some(dir) = cgroup {
        let deadline = Instant::now() + KILL_WAIT;
        while !remove_cgroup(dir) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    }
    0
}

#[cfg(test)]
mod tests;
