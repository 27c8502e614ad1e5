//! `--config FILE` and `stripwatch config check FILE`: a TOML file whose keys are the long
//! options of `live` and `analyze`, spelt as on the command line (`buffer-size = "256M"`).
//!
//! The file is turned back into command-line arguments and parsed by the same clap definitions
//! as the command line, so a value means exactly what the option means and is checked by the
//! same parser; options given on the command line are left out of what the file adds, which is
//! how the command line overrides the file. Serde checks the shape first (`deny_unknown_fields`,
//! the types), so a typo in a key is an error, never silently ignored.

use super::{Cli, UsageError};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// A number or a text: sizes may be written `67108864` or `"64M"`.
#[derive(Deserialize, Serialize)]
#[serde(untagged)]
pub enum Text {
    Number(u64),
    Text(String),
}

/// Every key a configuration file may hold: the long options of `live` and `analyze`
/// (`config_keys_are_the_long_options` keeps the two lists equal). Which command takes which key
/// is left to clap: a key the command does not take is an error there.
#[derive(Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ConfigFile {
    interface: Option<Vec<String>>,
    bpf: Option<String>,
    buffer_size: Option<Text>,
    snaplen: Option<u32>,
    no_promiscuous: Option<bool>,
    hold: Option<u64>,
    metrics: Option<String>,
    log_interval: Option<u64>,
    user: Option<String>,
    allow_root: Option<bool>,
    rotate: Option<Text>,
    state_interval: Option<u64>,
    no_progress: Option<bool>,
    follow: Option<PathBuf>,
    follow_settle: Option<u64>,
    out: Option<PathBuf>,
    smtp_ports: Option<Vec<u16>>,
    implicit_tls_ports: Option<Vec<u16>>,
    no_content_detection: Option<bool>,
    no_mta_sts_fetches: Option<bool>,
    workers: Option<usize>,
    max_flows: Option<usize>,
    max_flow_buffer: Option<usize>,
    idle_timeout: Option<u64>,
    fallback_window: Option<u64>,
    mx_window: Option<u64>,
    known_mx: Option<PathBuf>,
    mx_compare_window: Option<u64>,
    state: Option<PathBuf>,
    state_retention: Option<u64>,
    max_held_sessions: Option<usize>,
    memory_limit: Option<Text>,
    log_envelope: Option<bool>,
    shared_baseline: Option<bool>,
    shared_baseline_refresh: Option<u64>,
    sensor: Option<String>,
    trust_anchors: Option<Vec<PathBuf>>,
    tlsa: Option<PathBuf>,
    geoip_country: Option<Vec<PathBuf>>,
    geoip_asn: Option<Vec<PathBuf>>,
    json: Option<bool>,
    clickhouse: Option<String>,
    clickhouse_database: Option<String>,
    clickhouse_password_file: Option<PathBuf>,
    spool: Option<PathBuf>,
    spool_max_bytes: Option<Text>,
    clickhouse_batch_rows: Option<u64>,
    clickhouse_drain_timeout: Option<u64>,
    no_report: Option<bool>,
    log_format: Option<String>,
}

/// Reads and checks the shape of a configuration file: unreadable, not TOML, an unknown key or a
/// value of the wrong type is one line naming the file (and the line).
pub fn load(path: &Path) -> Result<ConfigFile, UsageError> {
    let fail = |what: String| UsageError(format!("config {}: {what}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    toml::from_str(&text).map_err(|e| {
        // serde lists every accepted key after an unknown one: too long for one line.
        let message = e.message().trim().replace('\n', " ");
        let message = match message.split_once(", expected one of") {
            Some((head, _)) => head.to_string(),
            None => message,
        };
        match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                fail(format!("line {line}: {message}"))
            }
            None => fail(message),
        }
    })
}

impl ConfigFile {
    /// The file as arguments of `command`, leaving out the options `given` on the command line.
    /// A flag (`no-report = true`) becomes `--no-report`, a list one argument per item, and
    /// anything else `--key=value`.
    fn arguments(
        &self,
        path: &Path,
        command: &clap::Command,
        given: impl Fn(&clap::Id) -> bool,
    ) -> Result<Vec<OsString>, UsageError> {
        let fail = |what: String| UsageError(format!("config {}: {what}", path.display()));
        let serde_json::Value::Object(keys) =
            serde_json::to_value(self).map_err(|e| fail(e.to_string()))?
        else {
            return Err(fail("not a table".into()));
        };
        let mut args = Vec::new();
        for (key, value) in keys {
            if value.is_null() {
                continue;
            }
            let arg = command
                .get_arguments()
                .find(|a| a.get_long() == Some(key.as_str()))
                .ok_or_else(|| {
                    fail(format!(
                        "`{key}` is not an option of `stripwatch {}`",
                        command.get_name()
                    ))
                })?;
            if given(arg.get_id()) {
                continue;
            }
            let items = match value {
                serde_json::Value::Bool(true) => {
                    args.push(OsString::from(format!("--{key}")));
                    continue;
                }
                serde_json::Value::Bool(false) => continue,
                serde_json::Value::Array(items) => items,
                other => vec![other],
            };
            for item in items {
                let text = match item {
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                args.push(OsString::from(format!("--{key}={text}")));
            }
        }
        Ok(args)
    }
}

/// The file's keys and values, to tell after a reload which ones changed.
pub fn snapshot(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, UsageError> {
    let file = load(path)?;
    match serde_json::to_value(file) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(UsageError(format!(
            "config {}: not a table",
            path.display()
        ))),
    }
}

/// Where the arguments of a run came from, to say so in an error about a value.
pub struct Provenance {
    /// The configuration file.
    pub path: PathBuf,
    /// The long options it supplied.
    pub keys: Vec<String>,
}

/// The command line with the configuration file's options added where the command line does not
/// give them. The command line is first parsed with the required options relaxed (they may come
/// from the file), only to find `--config` and what was given.
pub fn merge(args: Vec<OsString>) -> Result<(Vec<OsString>, Option<Provenance>), MergeError> {
    let matches = relaxed().try_get_matches_from(&args)?;
    let Some((name, sub)) = matches.subcommand() else {
        return Ok((args, None));
    };
    let Some(path) = sub.get_one::<PathBuf>("config").cloned() else {
        return Ok((args, None));
    };
    let extra = arguments_for(&path, name, sub)?;
    let keys = extra
        .iter()
        .filter_map(|a| a.to_str())
        .map(|a| {
            a.trim_start_matches('-')
                .split('=')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    // The top-level command has no options of its own, so the subcommand is the first argument.
    let mut merged: Vec<OsString> = args.iter().take(2).cloned().collect();
    merged.extend(extra);
    merged.extend(args.iter().skip(2).cloned());
    Ok((merged, Some(Provenance { path, keys })))
}

/// The file's arguments for subcommand `name`, whose command-line matches are `sub`.
fn arguments_for(path: &Path, name: &str, sub: &ArgMatches) -> Result<Vec<OsString>, UsageError> {
    let file = load(path)?;
    let command = Cli::command();
    let command = command
        .find_subcommand(name)
        .ok_or_else(|| UsageError(format!("--config: no subcommand {name}")))?;
    file.arguments(path, command, |id| {
        sub.value_source(id.as_str()) == Some(ValueSource::CommandLine)
    })
}

/// The command line's definitions with the options a file may supply not required.
fn relaxed() -> clap::Command {
    Cli::command()
        .mut_subcommand("live", |c| {
            c.mut_arg("interfaces", |a| a.required(false))
                .mut_arg("out", |a| a.required(false))
        })
        .mut_subcommand("analyze", |c| {
            c.mut_arg("out", |a| a.required(false))
                .mut_arg("captures", |a| a.required(false))
        })
}

/// Why the arguments could not be put together.
pub enum MergeError {
    /// The command line itself is wrong (or asks for help).
    Clap(clap::Error),
    /// The configuration file is.
    Config(UsageError),
}

impl From<clap::Error> for MergeError {
    fn from(e: clap::Error) -> Self {
        MergeError::Clap(e)
    }
}

impl From<UsageError> for MergeError {
    fn from(e: UsageError) -> Self {
        MergeError::Config(e)
    }
}

/// `stripwatch config check FILE --command live|analyze`: the file's shape, its keys against
/// the command, and every value through the command's own parsers. Options that the command
/// line must then still give (`interface`, `out`) may be missing from the file.
pub fn check(file: &Path, command: &str) -> anyhow::Result<()> {
    let args: Vec<OsString> = vec![
        "stripwatch".into(),
        command.into(),
        "--config".into(),
        file.as_os_str().to_owned(),
    ];
    let (merged, provenance) = merge(args).map_err(|e| match e {
        MergeError::Clap(e) => UsageError(plain(super::first_line(&e))),
        MergeError::Config(e) => e,
    })?;
    relaxed()
        .try_get_matches_from(merged)
        .map_err(|e| UsageError(plain(super::explain(&e, provenance.as_ref()))))?;
    println!("{}: valid for stripwatch {command}", file.display());
    Ok(())
}

/// Clap's line without its own `error: ` (main adds `stripwatch: error: `).
fn plain(line: String) -> String {
    line.strip_prefix("error: ")
        .map_or(line.clone(), str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The keys of the file and the long options of `live` and `analyze` are the same set, so
    /// a new option cannot be forgotten here (nor a removed one linger).
    #[test]
    fn config_keys_are_the_long_options() {
        let serde_json::Value::Object(keys) = serde_json::to_value(ConfigFile::default()).unwrap()
        else {
            panic!("a table")
        };
        let keys: BTreeSet<String> = keys.keys().cloned().collect();
        let command = Cli::command();
        let mut options = BTreeSet::new();
        for sub in ["live", "analyze"] {
            for a in command.find_subcommand(sub).unwrap().get_arguments() {
                if let Some(long) = a.get_long()
                    && !matches!(long, "help" | "config")
                {
                    options.insert(long.to_string());
                }
            }
        }
        assert_eq!(keys, options);
    }
}
