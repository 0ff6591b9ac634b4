//! The audit's progress on stderr: on a terminal, one line per cell rewritten in place as its
//! repeats run and finish (`[####------] 5/33 kill-after-effect 2/3: DUPLICATED, EXACT`), ended
//! when the cell is; elsewhere (CI logs, pipes) one plain line per finished repeat, so a log
//! never holds carriage returns.

use std::io::{IsTerminal, Write};

/// The progress across an audit's runs.
pub struct Progress {
    /// Runs finished (or skipped, for a cell that does not apply) over all of them.
    done: u64,
    total: u64,
    /// True when stderr is a terminal: lines are rewritten in place.
    live: bool,
    /// The verdicts of the current cell so far.
    verdicts: Vec<String>,
}

impl Progress {
    /// Progress over `total` runs, live when stderr is a terminal.
    pub fn new(total: u64) -> Progress {
        Progress {
            done: 0,
            total,
            live: std::io::stderr().is_terminal(),
            verdicts: Vec::new(),
        }
    }

    /// A repeat of `cell` started (shown on a terminal only).
    pub fn started(&mut self, cell: &str, repeat: u32, repeats: u32) {
        if self.live {
            let line = format!(
                "{} {cell} {repeat}/{repeats} running{}",
                bar(self.done, self.total),
                self.so_far()
            );
            rewrite(&line);
        }
    }

    /// A repeat of `cell` finished with `verdict` (`mechanisms`: what explained it).
    pub fn finished(
        &mut self,
        cell: &str,
        repeat: u32,
        repeats: u32,
        verdict: &str,
        mechanisms: &str,
    ) {
        self.done += 1;
        self.verdicts.push(verdict.to_owned());
        let bar = bar(self.done, self.total);
        if self.live {
            rewrite(&format!("{bar} {cell} {repeat}/{repeats}{}", self.so_far()));
        } else {
            say(&format!(
                "{bar} cell {cell} {repeat}/{repeats}: {verdict} ({mechanisms})"
            ));
        }
    }

    /// `runs` runs skipped (a cell that does not apply, said in `why`).
    pub fn skipped(&mut self, runs: u64, why: &str) {
        self.done += runs;
        self.line(why);
    }

    /// The current cell is over: its line stays; the next cell starts a new one.
    pub fn cell_done(&mut self) {
        if self.live && !self.verdicts.is_empty() {
            eprintln!();
        }
        self.verdicts.clear();
    }

    /// A line of its own (ends the cell's line first on a terminal).
    pub fn line(&mut self, msg: &str) {
        if self.live && !self.verdicts.is_empty() {
            eprintln!();
            self.verdicts.clear();
        }
        say(msg);
    }

    /// `: DUPLICATED, EXACT` or nothing.
    fn so_far(&self) -> String {
        if self.verdicts.is_empty() {
            String::new()
        } else {
            format!(": {}", self.verdicts.join(", "))
        }
    }
}

/// Rewrites the terminal's current line.
fn rewrite(line: &str) {
    let mut err = std::io::stderr().lock();
    // A failed write to the terminal loses only the progress line.
    let _ = write!(err, "\r\x1b[2Kexactly audit: {line}");
    let _ = err.flush();
}

/// A progress bar across the audit's runs: `[#####-----] 5/10`.
pub fn bar(done: u64, total: u64) -> String {
    let width = 20u64;
    let filled = (done * width).checked_div(total).unwrap_or(width) as usize;
    format!(
        "[{}{}] {done}/{total}",
        "#".repeat(filled.min(width as usize)),
        "-".repeat(width as usize - filled.min(width as usize))
    )
}

/// One plain line on stderr.
pub fn say(msg: &str) {
    eprintln!("exactly audit: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_runs_done() {
        assert_eq!(bar(0, 4), "[--------------------] 0/4");
        assert_eq!(bar(2, 4), "[##########----------] 2/4");
        assert_eq!(bar(4, 4), "[####################] 4/4");
        assert_eq!(bar(0, 0), "[####################] 0/0");
    }

    #[test]
    fn a_cell_line_lists_its_verdicts_so_far() {
        let mut p = Progress {
            done: 0,
            total: 6,
            live: false,
            verdicts: Vec::new(),
        };
        assert_eq!(p.so_far(), "");
        p.finished("sever", 1, 3, "EXACT", "—");
        p.finished("sever", 2, 3, "DUPLICATED", "sever_uncommitted");
        assert_eq!(p.so_far(), ": EXACT, DUPLICATED");
        assert_eq!(p.done, 2);
        p.cell_done();
        assert_eq!(p.so_far(), "", "the next cell starts clean");
    }
}
