//! SIGHUP for `live` and `analyze --follow`: a new set of output files (for logrotate and shippers, which may then take
//! the closed ones), and the configuration file read again. Only what can change under a
//! running sensor without touching its capture, its judges or its threads is applied:
//! [`RELOADED`]. Every other key that changed is logged as a warning and takes effect at the
//! next start. A file that no longer parses is logged and changes nothing.

use super::{Command, config, follow};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use stripwatch::sink::rotating::RotationControl;

/// The configuration keys a SIGHUP applies to the running sensor.
pub const RELOADED: &[&str] = &["rotate", "state-interval", "log-interval"];

/// The running sensor's settings that a reload may change, shared with the threads that use
/// them (the file sink, the output stage, the logging thread).
pub struct Knobs {
    /// The rotation policy, and the request for new files.
    pub rotation: Arc<RotationControl>,
    /// `--state-interval`, seconds.
    pub state_interval: Arc<AtomicU64>,
    /// `--log-interval`, seconds.
    pub log_interval: Arc<AtomicU64>,
}

/// What a SIGHUP does, with the configuration as last read.
pub struct Reloader {
    knobs: Knobs,
    config: Option<PathBuf>,
    seen: serde_json::Map<String, serde_json::Value>,
}

impl Reloader {
    /// A reloader for the run started with `config` (its keys as read at the start).
    pub fn new(knobs: Knobs, config: Option<PathBuf>) -> Result<Reloader, super::UsageError> {
        let seen = match &config {
            Some(path) => config::snapshot(path)?,
            None => serde_json::Map::new(),
        };
        Ok(Reloader {
            knobs,
            config,
            seen,
        })
    }

    /// The knobs, for the threads that read them.
    pub fn knobs(&self) -> &Knobs {
        &self.knobs
    }

    /// Handles one SIGHUP.
    pub fn hangup(&mut self) {
        self.knobs.rotation.reopen();
        tracing::info!("SIGHUP: new output files");
        let Some(path) = self.config.clone() else {
            return;
        };
        let now = match config::snapshot(&path) {
            Ok(now) => now,
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP: configuration not reloaded");
                return;
            }
        };
        // Parsed as at the start, so the command line still wins and values are checked.
        // `live` and `analyze --follow` take the same keys, with the same defaults.
        let (rotation, state_interval, log_interval) = match super::reparse() {
            Ok(super::Cli {
                command: Command::Live(args),
            }) => (args.rotate, args.state_interval, args.log_interval),
            Ok(super::Cli {
                command: Command::Analyze(args),
            }) => (
                args.follow.rotate.unwrap_or(follow::DEFAULT_ROTATION),
                args.follow
                    .state_interval
                    .unwrap_or(follow::DEFAULT_STATE_INTERVAL),
                args.follow
                    .log_interval
                    .unwrap_or(follow::DEFAULT_LOG_INTERVAL),
            ),
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "SIGHUP: configuration not reloaded");
                return;
            }
        };
        self.knobs.rotation.set(rotation);
        self.knobs
            .state_interval
            .store(state_interval, Ordering::Relaxed);
        self.knobs
            .log_interval
            .store(log_interval, Ordering::Relaxed);
        let keys: BTreeSet<&String> = self.seen.keys().chain(now.keys()).collect();
        for key in keys {
            if self.seen.get(key) == now.get(key) {
                continue;
            }
            if RELOADED.contains(&key.as_str()) {
                tracing::info!(key = %key, "SIGHUP: reloaded");
            } else {
                tracing::warn!(
                    key = %key,
                    "SIGHUP: changed in the configuration; takes effect at the next start"
                );
            }
        }
        self.seen = now;
    }
}

/// The housekeeping thread of a long run (`live`, `analyze --follow`): until `done`, it handles
/// SIGHUP (`Reloader::hangup`) and calls `log` every `log-interval` seconds (reloadable), so
/// the counters show while the run goes on.
pub fn housekeeping(
    mut reloader: Reloader,
    hangup: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    mut log: impl FnMut() + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = Instant::now();
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            if hangup.swap(false, Ordering::Relaxed) {
                reloader.hangup();
            }
            let every = reloader.knobs().log_interval.load(Ordering::Relaxed);
            if last.elapsed() >= Duration::from_secs(every) {
                last = Instant::now();
                log();
            }
        }
    })
}
