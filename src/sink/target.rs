//! Where ClickHouse is and who stripwatch is there: the HTTP URL, the database, and the
//! credentials. Passwords never come from the command line (they would show in `ps` and in shell
//! history): only from `STRIPWATCH_CLICKHOUSE_PASSWORD` or a password file.

use std::path::Path;
use thiserror::Error;

/// Environment variable holding the ClickHouse user (default `default`).
pub const USER_ENV: &str = "STRIPWATCH_CLICKHOUSE_USER";
/// Environment variable holding the ClickHouse password (default empty).
pub const PASSWORD_ENV: &str = "STRIPWATCH_CLICKHOUSE_PASSWORD";
/// The database used when neither the URL path nor `--clickhouse-database` names one.
pub const DEFAULT_DATABASE: &str = "stripwatch";

/// A ClickHouse endpoint that could not be configured.
#[derive(Debug, Error)]
pub enum TargetError {
    /// The URL does not parse or is not HTTP(S).
    #[error("--clickhouse {url}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database name is not a plain identifier.
    #[error("ClickHouse database name {0:?} must be letters, digits and '_' only")]
    Database(String),
    /// The password file could not be read.
    #[error("cannot read the password file {path}: {source}")]
    PasswordFile {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Everything needed to talk to one ClickHouse server.
#[derive(Clone)]
pub struct Target {
    /// `scheme://host:port`, without path, user or password.
    pub base_url: String,
    /// The database the tables live in.
    pub database: String,
    /// The user.
    pub user: String,
    /// The password (empty for none).
    pub password: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Target")
            .field("base_url", &self.base_url)
            .field("database", &self.database)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Builds a target from the command line and the environment.
    ///
    /// The database is `database` when given, else the URL's path (`http://host:8123/mydb`),
    /// else `stripwatch`. A password inside the URL is refused (it would be on the command
    /// line); the user comes from `STRIPWATCH_CLICKHOUSE_USER`, else the URL's user name, else
    /// `default`; the password from `password_file` (first line), else
    /// `STRIPWATCH_CLICKHOUSE_PASSWORD`, else empty.
    pub fn from_args(
        url: &str,
        database: Option<&str>,
        password_file: Option<&Path>,
    ) -> Result<Target, TargetError> {
        let bad = |reason: &str| TargetError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("only http:// and https:// URLs are supported"));
        }
        if parsed.password().is_some() {
            return Err(bad(
                "a password in the URL would show on the command line; use \
                 STRIPWATCH_CLICKHOUSE_PASSWORD or --clickhouse-password-file",
            ));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad(
                "query strings are not supported; use --clickhouse-database",
            ));
        }
        let host = parsed.host_str().ok_or_else(|| bad("no host"))?;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| bad("no port"))?;
        let base_url = format!("{}://{host}:{port}", parsed.scheme());
        let path_db = parsed.path().trim_matches('/');
        if path_db.contains('/') {
            return Err(bad("the path may only name the database"));
        }
        let database = database
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .or_else(|| (!path_db.is_empty()).then(|| path_db.to_string()))
            .unwrap_or_else(|| DEFAULT_DATABASE.to_string());
        if !valid_database(&database) {
            return Err(TargetError::Database(database));
        }
        let user = std::env::var(USER_ENV)
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| (!parsed.username().is_empty()).then(|| parsed.username().to_string()))
            .unwrap_or_else(|| "default".to_string());
        let password = match password_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|source| TargetError::PasswordFile {
                    path: path.display().to_string(),
                    source,
                })?
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
            None => std::env::var(PASSWORD_ENV).unwrap_or_default(),
        };
        Ok(Target {
            base_url,
            database,
            user,
            password,
        })
    }

    /// A client for this target, with the settings ClickHouse 18.16 needs (no schema
    /// validation: 18.16 does not know RowBinaryWithNamesAndTypes).
    pub fn client(&self) -> clickhouse::Client {
        let mut c = clickhouse::Client::default()
            .with_url(&self.base_url)
            .with_database(&self.database)
            .with_user(&self.user)
            .with_validation(false);
        if !self.password.is_empty() {
            c = c.with_password(&self.password);
        }
        c
    }

    /// A client without a database, for creating it.
    pub fn server_client(&self) -> clickhouse::Client {
        let mut c = clickhouse::Client::default()
            .with_url(&self.base_url)
            .with_user(&self.user)
            .with_validation(false);
        if !self.password.is_empty() {
            c = c.with_password(&self.password);
        }
        c
    }
}

/// True when `name` can be used unquoted as a database name: letters, digits and `_`, not
/// starting with a digit (it goes into SQL text, so nothing else is allowed).
pub fn valid_database(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// An error and its causes on one line, each cause once: the HTTP client nests the same text
/// several times, and the useful part (`invalid peer certificate`, `Connection refused`) is at
/// the bottom.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = c.source();
    }
    out
}

/// What a failed request says about the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// It could not be reached (refused, reset, timed out, name not found): it may come back.
    Unreachable,
    /// It answered, or TLS failed: retrying will not help (credentials, schema, certificate).
    Refused,
}

/// Classifies a client error: network trouble is `Unreachable`, except TLS failures (an
/// untrusted or mismatched certificate), which are configuration errors.
pub fn classify(e: &clickhouse::error::Error) -> Failure {
    match e {
        clickhouse::error::Error::TimedOut => Failure::Unreachable,
        clickhouse::error::Error::Network(_) => {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
            while let Some(c) = cur {
                if let Some(io) = c.downcast_ref::<std::io::Error>()
                    && io.kind() == std::io::ErrorKind::InvalidData
                {
                    return Failure::Refused;
                }
                if c.to_string().contains("certificate") {
                    return Failure::Refused;
                }
                cur = c.source();
            }
            Failure::Unreachable
        }
        _ => Failure::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_from_flag_then_path_then_default() {
        let t = Target::from_args("http://127.0.0.1:8123/mail_db", None, None).unwrap();
        assert_eq!(t.database, "mail_db");
        assert_eq!(t.base_url, "http://127.0.0.1:8123");
        let t = Target::from_args("http://127.0.0.1:8123/mail_db", Some("other"), None).unwrap();
        assert_eq!(t.database, "other");
        let t = Target::from_args("http://localhost", None, None).unwrap();
        assert_eq!(t.database, DEFAULT_DATABASE);
        assert_eq!(t.base_url, "http://localhost:80");
    }

    #[test]
    fn refuses_passwords_on_the_command_line_and_odd_names() {
        assert!(Target::from_args("http://u:pw@127.0.0.1:8123", None, None).is_err());
        assert!(Target::from_args("tcp://127.0.0.1:9000", None, None).is_err());
        assert!(Target::from_args("http://127.0.0.1:8123/a/b", None, None).is_err());
        assert!(Target::from_args("http://127.0.0.1:8123", Some("x; DROP"), None).is_err());
        assert!(Target::from_args("not a url", None, None).is_err());
    }

    #[test]
    fn password_file_first_line() {
        let dir = std::env::temp_dir().join(format!("sw-target-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret\nignored\n").unwrap();
        let t = Target::from_args("http://127.0.0.1:8123", None, Some(&f)).unwrap();
        assert_eq!(t.password, "s3cret");
        assert!(!format!("{t:?}").contains("s3cret"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
