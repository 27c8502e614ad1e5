//! `stripwatch state`: look inside the baseline file that `analyze --state` keeps.

use super::StateCommand;
use anyhow::{Result, anyhow, bail};
use stripwatch::state::StateStore;

/// Runs `state show` (entries per table) or `state dump` (every entry as JSON lines).
pub fn run(what: StateCommand) -> Result<()> {
    let (StateCommand::Show { path } | StateCommand::Dump { path }) = &what;
    // Opening creates a missing file: refuse first, so that a typo does not leave one behind.
    if !path.exists() {
        bail!("{}: no such state file", path.display());
    }
    // Retention i64::MAX: only looking, nothing may expire.
    let store = StateStore::open(path, i64::MAX).map_err(|e| anyhow!("{e}"))?;
    match what {
        StateCommand::Show { .. } => {
            let s = store.summary().map_err(|e| anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
        StateCommand::Dump { .. } => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            store.dump(&mut lock).map_err(|e| anyhow!("{e}"))?;
        }
    }
    Ok(())
}
