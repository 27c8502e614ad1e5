//! A real ClickHouse server for the tests: a throwaway data directory, a free loopback port,
//! `clickhouse-server --config-file=DIR/config.xml` as a foreground child, ready when `/ping`
//! answers. Works with Debian's 18.16 package and with current releases (the single
//! `clickhouse` binary). Without a server binary the test fails with a clear message, unless
//! `STRIPWATCH_SKIP_CLICKHOUSE=1` says to skip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user with a password that stripwatch writes as (the tests pass the password by file or
/// environment, as users must).
pub const WRITER_USER: &str = "writer";
/// Its password.
pub const WRITER_PASSWORD: &str = "wr1ter-pw";

/// A running (or stopped) ClickHouse server owned by one test.
pub struct ClickHouse {
    /// Root of the server's files (config, data, logs).
    pub dir: PathBuf,
    /// HTTP port on 127.0.0.1.
    pub http_port: u16,
    /// HTTPS port on 127.0.0.1 (certificate for `localhost` from a test CA), when started
    /// with TLS.
    pub https_port: Option<u16>,
    /// XML added inside `<yandex>` (ports, ZooKeeper, macros, clusters for a cluster node).
    extra_config: String,
    program: (PathBuf, Vec<String>),
    child: Option<Child>,
}

/// Finds the server program: `clickhouse-server`, else `clickhouse server`.
fn server_program() -> Option<(PathBuf, Vec<String>)> {
    let dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let extra = [PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")];
    for (name, args) in [
        ("clickhouse-server", vec![]),
        ("clickhouse", vec!["server"]),
    ] {
        for d in dirs.iter().chain(&extra) {
            let p = d.join(name);
            if p.is_file() {
                return Some((p, args.into_iter().map(String::from).collect()));
            }
        }
    }
    None
}

/// True when the tests were told to skip ClickHouse (and say so on stderr).
pub fn skip() -> bool {
    if std::env::var("STRIPWATCH_SKIP_CLICKHOUSE").is_ok_and(|v| v == "1") {
        eprintln!("STRIPWATCH_SKIP_CLICKHOUSE=1: skipping a ClickHouse test");
        return true;
    }
    false
}

/// A loopback port that was free a moment ago, below the kernel's ephemeral range (32768–60999
/// by default). A port from that range, as `bind(0)` gives, can be taken by any outgoing
/// connection (a replica fetching from another, a client) between this check and the server's
/// own bind; that happened ("Address already in use" from the second node of a cluster). Ports
/// 20000–32767 are handed out in turn from a start that depends on the process id, so the tests
/// of one process never get the same one and two processes rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 32_768 - FIRST;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(97) % COUNT;
    for _ in 0..COUNT {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + (start + n) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {FIRST}..32768")
}

impl ClickHouse {
    /// Starts a server in `dir` (created, emptied first). Returns `None` only when
    /// `STRIPWATCH_SKIP_CLICKHOUSE=1`; panics with instructions when no server is installed.
    pub fn start(dir: &Path) -> Option<ClickHouse> {
        Self::start_with(dir, false)
    }

    /// As `start`, and with `tls` also an HTTPS port whose certificate (for `localhost`)
    /// comes from a private test CA written to `DIR/ca.pem`.
    pub fn start_with(dir: &Path, tls: bool) -> Option<ClickHouse> {
        Self::start_full(dir, tls, String::new())
    }

    /// As `start`, with `extra_config` (XML) added to the server's configuration: a node of a
    /// cluster (`common::cluster`).
    pub fn start_configured(dir: &Path, extra_config: String) -> Option<ClickHouse> {
        Self::start_full(dir, false, extra_config)
    }

    fn start_full(dir: &Path, tls: bool, extra_config: String) -> Option<ClickHouse> {
        if skip() {
            return None;
        }
        let Some(program) = server_program() else {
            panic!(
                "clickhouse-server is not installed (scripts/install-deps.sh installs it: \
                 apt-get install clickhouse-server clickhouse-client); set \
                 STRIPWATCH_SKIP_CLICKHOUSE=1 to skip the ClickHouse tests"
            );
        };
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("data")).expect("create the server directory");
        let mut ch = ClickHouse {
            dir: dir.to_path_buf(),
            http_port: free_port(),
            https_port: tls.then(free_port),
            extra_config,
            program,
            child: None,
        };
        if tls {
            ch.write_certificates();
        }
        ch.write_config();
        ch.launch();
        Some(ch)
    }

    fn write_certificates(&self) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let leaf = CertificateParams::new(vec!["localhost".to_string()])
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server certificate");
        std::fs::write(self.dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
        std::fs::write(self.dir.join("server.crt"), leaf.pem()).expect("write server.crt");
        std::fs::write(self.dir.join("server.key"), key.serialize_pem()).expect("write key");
    }

    fn write_config(&self) {
        let d = self.dir.display();
        let tls = match self.https_port {
            Some(port) => format!(
                "<https_port>{port}</https_port>
    <openSSL><server>
        <certificateFile>{d}/server.crt</certificateFile>
        <privateKeyFile>{d}/server.key</privateKeyFile>
        <verificationMode>none</verificationMode>
        <loadDefaultCAFile>false</loadDefaultCAFile>
    </server></openSSL>"
            ),
            None => String::new(),
        };
        let config = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{d}/server.log</log>
        <errorlog>{d}/server.err.log</errorlog>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{port}</http_port>
    {tls}
    <path>{d}/data/</path>
    <tmp_path>{d}/data/tmp/</tmp_path>
    <user_files_path>{d}/data/user_files/</user_files_path>
    <format_schema_path>{d}/data/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <max_concurrent_queries>32</max_concurrent_queries>
    {extra}
</yandex>
"#,
            port = self.http_port,
            extra = self.extra_config
        );
        let quota = "<quota>default</quota><profile>default</profile>\
                     <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>";
        let users = format!(
            r#"<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users>
        <default><password></password>{quota}</default>
        <{WRITER_USER}><password>{WRITER_PASSWORD}</password>{quota}</{WRITER_USER}>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors>
        <result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time>
    </interval></default></quotas>
</yandex>
"#
        );
        std::fs::write(self.dir.join("config.xml"), config).expect("write config.xml");
        std::fs::write(self.dir.join("users.xml"), users).expect("write users.xml");
    }

    fn launch(&mut self) {
        let stdout = std::fs::File::create(self.dir.join("stdout.log")).expect("log file");
        let stderr = stdout.try_clone().expect("log file");
        let child = Command::new(&self.program.0)
            .args(&self.program.1)
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.0.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(Some(status)) = self.child.as_mut().map(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "clickhouse-server exited ({status}) before answering /ping:\n{}",
                    self.log_tail()
                );
            }
            if matches!(http(self.http_port, "GET", "/ping", ""), Ok((200, ref b)) if b.starts_with("Ok"))
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "clickhouse-server did not answer /ping within 60 s:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the server's logs, for failure messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["stdout.log", "server.err.log"] {
            if let Ok(text) = std::fs::read_to_string(self.dir.join(name)) {
                let lines: Vec<&str> = text.lines().collect();
                let start = lines.len().saturating_sub(15);
                out.push_str(&format!("--- {name}\n{}\n", lines[start..].join("\n")));
            }
        }
        out
    }

    /// The HTTP URL stripwatch is given.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The HTTPS URL (started with TLS only).
    pub fn https_url(&self) -> String {
        format!(
            "https://localhost:{}",
            self.https_port.expect("server started without TLS")
        )
    }

    /// The test CA that signed the HTTPS certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// SIGKILL: the server gets no chance to flush or say goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: the server keeps its sockets but answers nothing until `resume`.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("server not running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid} failed");
    }

    /// Starts the server again on the same data directory and port.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Runs one statement as the default user; the response body, or the server's error.
    pub fn try_query(&self, sql: &str) -> Result<String, String> {
        match http(self.http_port, "POST", "/", sql) {
            Ok((200, body)) => Ok(body),
            Ok((code, body)) => Err(format!("HTTP {code}: {body}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Runs one statement; panics with the server's message when it fails.
    pub fn query(&self, sql: &str) -> String {
        self.try_query(sql)
            .unwrap_or_else(|e| panic!("ClickHouse query failed: {e}\nquery: {sql}"))
    }

    /// The result of a query as lines of tab-separated fields.
    pub fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.query(sql)
            .lines()
            .map(|l| l.split('\t').map(String::from).collect())
            .collect()
    }

    /// A single number.
    pub fn count(&self, sql: &str) -> u64 {
        let text = self.query(sql);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {text:?} from {sql}"))
    }

    /// Writes the writer's password to a file (mode 0600) and returns its path.
    pub fn password_file(&self) -> PathBuf {
        let path = self.dir.join("password");
        std::fs::write(&path, format!("{WRITER_PASSWORD}\n")).expect("write password file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        path
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One HTTP/1.0 request to 127.0.0.1:`port`; the status code and body.
pub fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
