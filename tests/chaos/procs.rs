//! Worker processes: the suite's own binary re-executed with `JOBFORGE_CHAOS_ROLE=worker`,
//! one log file per slot, killed (SIGKILL) when the value is dropped, also on panic.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::roles::{self, Common, WorkerSettings};

/// A clock offset for a child process, applied with libfaketime's preload (the library
/// `faketime` itself loads). `faketime` forks and waits, so its own pid would not be the
/// worker's: signals sent to it would miss.
#[derive(Debug, Clone)]
pub(crate) struct Skew {
    pub(crate) preload: String,
    /// `+30s`, `-30s`.
    pub(crate) offset: String,
}

impl Skew {
    pub(crate) fn apply(&self, cmd: &mut Command) {
        cmd.env("LD_PRELOAD", &self.preload)
            .env("FAKETIME", &self.offset)
            // Tokio's timers run on the monotonic clock: leave it alone, shift wall time.
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
}

/// Find the preload `faketime` uses, by asking it to print its environment.
pub(crate) fn faketime_preload() -> Result<String, String> {
    let out = Command::new("faketime")
        .args(["-f", "+0s", "env"])
        .output()
        .map_err(|e| {
            format!("faketime is not installed ({e}); the clock_skew scenario needs it (apt-get install faketime)")
        })?;
    if !out.status.success() {
        return Err(format!("`faketime -f +0s env` failed: {}", out.status));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("LD_PRELOAD="))
        .map(str::to_owned)
        .ok_or_else(|| "faketime set no LD_PRELOAD; cannot skew a child's clock".to_owned())
}

/// Send `signal` (`TERM`, `KILL`) to `pid` with kill(1).
pub(crate) fn signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

struct Proc {
    id: String,
    child: Child,
    /// Whether it wrote its ready line (its signal handlers are in place long before).
    ready: bool,
    /// When it was sent SIGTERM.
    stop_asked: Option<Instant>,
}

/// An exit the suite did not ask for, or a stop that did not go as promised.
#[derive(Debug, Clone)]
pub(crate) struct ExitNote {
    pub(crate) worker: String,
    pub(crate) what: String,
}

/// The scenario's worker processes, `slots` of them, each slot restarted with a new worker
/// id (`w<slot>g<generation>`).
pub(crate) struct Workers {
    exe: PathBuf,
    log_dir: PathBuf,
    common: Common,
    settings: WorkerSettings,
    skews: Vec<Option<Skew>>,
    live: Vec<Option<Proc>>,
    generation: Vec<u32>,
    /// Asked to stop (SIGTERM), not yet gone.
    stopping: Vec<Proc>,
    /// How many each signal was sent, and the exits that broke a promise.
    pub(crate) kills: u32,
    pub(crate) terms: u32,
    pub(crate) notes: Vec<ExitNote>,
}

impl Workers {
    pub(crate) fn new(
        exe: &Path,
        log_dir: &Path,
        common: Common,
        settings: WorkerSettings,
        skews: Vec<Option<Skew>>,
    ) -> Self {
        let n = skews.len();
        Self {
            exe: exe.to_path_buf(),
            log_dir: log_dir.to_path_buf(),
            common,
            settings,
            skews,
            live: (0..n).map(|_| None).collect(),
            generation: vec![0; n],
            stopping: Vec::new(),
            kills: 0,
            terms: 0,
            notes: Vec::new(),
        }
    }

    pub(crate) fn slots(&self) -> usize {
        self.live.len()
    }

    fn log_path(&self, slot: usize) -> PathBuf {
        self.log_dir.join(format!("worker-{slot}.log"))
    }

    /// Start a worker in `slot` (which must be empty).
    pub(crate) fn spawn(&mut self, slot: usize) -> Result<(), String> {
        self.generation[slot] += 1;
        let id = format!("w{slot}g{}", self.generation[slot]);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(slot))
            .map_err(|e| format!("open the worker log: {e}"))?;
        let mut cmd = Command::new(&self.exe);
        cmd.envs(self.common.env())
            .envs(self.settings.env(&id))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(skew) = &self.skews[slot] {
            skew.apply(&mut cmd);
        }
        let child = cmd.spawn().map_err(|e| format!("spawn worker {id}: {e}"))?;
        self.live[slot] = Some(Proc {
            id,
            child,
            ready: false,
            stop_asked: None,
        });
        Ok(())
    }

    /// Note which live workers wrote their ready line; a worker that exited before is an
    /// error with its log's tail.
    fn refresh_ready(&mut self) -> Result<Vec<String>, String> {
        let mut waiting = Vec::new();
        for slot in 0..self.slots() {
            let log_path = self.log_path(slot);
            let Some(proc) = self.live[slot].as_mut() else {
                continue;
            };
            if proc.ready {
                continue;
            }
            if let Ok(Some(status)) = proc.child.try_wait() {
                return Err(format!(
                    "worker {} exited at start ({status}); its log ends:\n{}",
                    proc.id,
                    tail(&log_path, 20)
                ));
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains(&roles::ready_line(&proc.id)) {
                proc.ready = true;
            } else {
                waiting.push(proc.id.clone());
            }
        }
        Ok(waiting)
    }

    /// Wait until every live worker wrote its ready line.
    pub(crate) async fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let waiting = self.refresh_ready()?;
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("workers {waiting:?} not ready after {within:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A random slot whose worker is ready (SIGTERM is sent only to a worker that can
    /// handle it: one still starting would die of it, which says nothing of jobforge).
    pub(crate) fn random_ready(&mut self, rng: &mut fastrand::Rng) -> Option<usize> {
        let _ = self.refresh_ready();
        let ready: Vec<usize> = (0..self.slots())
            .filter(|s| self.live[*s].as_ref().is_some_and(|p| p.ready))
            .collect();
        (!ready.is_empty()).then(|| ready[rng.usize(..ready.len())])
    }

    /// SIGKILL the worker in `slot` and start another there at once.
    pub(crate) fn kill_and_restart(&mut self, slot: usize) -> Result<(), String> {
        if let Some(mut proc) = self.live[slot].take() {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
            self.kills += 1;
        }
        self.spawn(slot)
    }

    /// SIGTERM the worker in `slot` (it shuts down gracefully) and start another there at
    /// once; the old one's exit is checked by [`reap`](Self::reap).
    pub(crate) fn term_and_restart(&mut self, slot: usize) -> Result<(), String> {
        if let Some(mut proc) = self.live[slot].take() {
            signal(proc.child.id(), "TERM");
            proc.stop_asked = Some(Instant::now());
            self.terms += 1;
            self.stopping.push(proc);
        }
        self.spawn(slot)
    }

    /// Collect exits: a stopping worker must exit 0 within `stop_within`; a live worker must
    /// not exit at all (it is noted and started again, so the run can finish).
    pub(crate) fn reap(&mut self, stop_within: Duration) {
        let mut still = Vec::new();
        for mut proc in std::mem::take(&mut self.stopping) {
            match proc.child.try_wait() {
                Ok(Some(status)) => self.note_stop(&proc.id, status),
                Ok(None) if proc.stop_asked.is_some_and(|t| t.elapsed() > stop_within) => {
                    let _ = proc.child.kill();
                    let _ = proc.child.wait();
                    self.notes.push(ExitNote {
                        worker: proc.id.clone(),
                        what: format!("did not exit within {stop_within:?} of SIGTERM; killed"),
                    });
                }
                _ => still.push(proc),
            }
        }
        self.stopping = still;
        for slot in 0..self.slots() {
            let exited = self.live[slot]
                .as_mut()
                .and_then(|p| p.child.try_wait().ok().flatten());
            if let Some(status) = exited {
                let id = self.live[slot].take().map(|p| p.id).unwrap_or_default();
                self.notes.push(ExitNote {
                    worker: id,
                    what: format!(
                        "exited unasked ({status}); log tail:\n{}",
                        tail(&self.log_path(slot), 10)
                    ),
                });
                if let Err(e) = self.spawn(slot) {
                    self.notes.push(ExitNote {
                        worker: format!("slot {slot}"),
                        what: e,
                    });
                }
            }
        }
    }

    fn note_stop(&mut self, id: &str, status: ExitStatus) {
        if !status.success() {
            self.notes.push(ExitNote {
                worker: id.to_owned(),
                what: format!("exited with {status} after SIGTERM (expected 0)"),
            });
        }
    }

    /// How many workers run now.
    pub(crate) fn alive(&mut self) -> usize {
        self.live
            .iter_mut()
            .flatten()
            .filter_map(|p| p.child.try_wait().ok())
            .filter(Option::is_none)
            .count()
    }

    /// SIGTERM every worker and wait up to `within` for each to exit 0; stragglers are
    /// killed and noted.
    pub(crate) async fn stop_all(&mut self, within: Duration) {
        // A worker started a moment ago gets the time to install its handlers.
        if let Err(e) = self.wait_ready(Duration::from_secs(30)).await {
            self.notes.push(ExitNote {
                worker: "?".to_owned(),
                what: e,
            });
        }
        let now = Instant::now();
        for mut proc in self.live.iter_mut().filter_map(Option::take) {
            signal(proc.child.id(), "TERM");
            proc.stop_asked = Some(now);
            self.stopping.push(proc);
        }
        let deadline = Instant::now() + within;
        while !self.stopping.is_empty() && Instant::now() < deadline {
            let mut still = Vec::new();
            for mut proc in std::mem::take(&mut self.stopping) {
                match proc.child.try_wait() {
                    Ok(Some(status)) => self.note_stop(&proc.id, status),
                    Ok(None) => still.push(proc),
                    Err(e) => self.notes.push(ExitNote {
                        worker: proc.id.clone(),
                        what: format!("cannot wait for it: {e}"),
                    }),
                }
            }
            self.stopping = still;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for mut proc in std::mem::take(&mut self.stopping) {
            let _ = proc.child.kill();
            let _ = proc.child.wait();
            self.notes.push(ExitNote {
                worker: proc.id.clone(),
                what: format!("did not exit within {within:?} of SIGTERM; killed"),
            });
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for proc in self
            .live
            .iter_mut()
            .filter_map(Option::take)
            .chain(self.stopping.drain(..))
        {
            let mut child = proc.child;
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last `n` lines of a log file.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
