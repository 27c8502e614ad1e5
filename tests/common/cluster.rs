//! A real ClickHouse cluster for the tests: ZooKeeper (Debian's `zookeeperd` jar, run as a
//! plain `QuorumPeerMain` process) and four `clickhouse-server` processes on loopback, forming
//! the cluster `mail` of 2 shards × 2 replicas. Everything lives in one throwaway directory and
//! dies with the value. Without ZooKeeper or ClickHouse the test fails with a clear message,
//! unless `STRIPWATCH_SKIP_CLUSTER=1` (or `STRIPWATCH_SKIP_CLICKHOUSE=1`) says to skip.

use super::clickhouse::{ClickHouse, free_port};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The cluster's name in every node's `<remote_servers>`.
pub const CLUSTER: &str = "mail";

/// Debian's ZooKeeper jar (its manifest names the jars it needs).
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

/// ZooKeeper's tick (ms). Sessions may be as short as two ticks, so a killed node's session
/// (and with it the "replica is active" mark that keeps its restart from taking over) expires
/// within the session timeout below.
const TICK_MS: u64 = 500;
/// The ClickHouse nodes' ZooKeeper session timeout (ms).
const SESSION_TIMEOUT_MS: u64 = 3000;

/// A running ZooKeeper.
pub struct ZooKeeper {
    /// The client port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// True when the tests were told to skip the cluster (and say so on stderr).
pub fn skip() -> bool {
    for var in ["STRIPWATCH_SKIP_CLUSTER", "STRIPWATCH_SKIP_CLICKHOUSE"] {
        if std::env::var(var).is_ok_and(|v| v == "1") {
            eprintln!("{var}=1: skipping a ClickHouse cluster test");
            return true;
        }
    }
    false
}

impl ZooKeeper {
    /// Starts ZooKeeper in `dir` and waits until it serves sessions (`srvr` reports a mode: a
    /// ClickHouse node with replicated tables exits if ZooKeeper only answers `ruok`).
    pub fn start(dir: &Path) -> ZooKeeper {
        let java = ["/usr/bin/java", "/usr/lib/jvm/default-java/bin/java"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file());
        let (Some(java), true) = (java, Path::new(ZOOKEEPER_JAR).is_file()) else {
            panic!(
                "ZooKeeper is not installed ({ZOOKEEPER_JAR} and java; scripts/install-deps.sh \
                 installs them: apt-get install zookeeperd); set STRIPWATCH_SKIP_CLUSTER=1 to \
                 skip the cluster tests"
            );
        };
        std::fs::create_dir_all(dir.join("data")).expect("create the ZooKeeper directory");
        let port = free_port();
        let d = dir.display();
        let cfg = format!(
            "tickTime={TICK_MS}\ndataDir={d}/data\nclientPort={port}\n\
             clientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
             4lw.commands.whitelist=srvr,ruok\nminSessionTimeout={}\n",
            2 * TICK_MS
        );
        std::fs::write(dir.join("zoo.cfg"), cfg).expect("write zoo.cfg");
        let log = std::fs::File::create(dir.join("zookeeper.log")).expect("log file");
        let child = Command::new(java)
            .args([
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-cp",
                ZOOKEEPER_JAR,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(dir.join("zoo.cfg"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("cannot start ZooKeeper (java)");
        let mut zk = ZooKeeper {
            port,
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !zk.serving() {
            if let Some(Ok(Some(status))) = zk.child.as_mut().map(Child::try_wait) {
                panic!("ZooKeeper exited ({status}):\n{}", zk.log());
            }
            assert!(
                Instant::now() < deadline,
                "ZooKeeper did not serve within 60 s:\n{}",
                zk.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        zk
    }

    fn serving(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut answer = String::new();
        s.write_all(b"srvr").is_ok()
            && s.read_to_string(&mut answer).is_ok()
            && answer.contains("Mode:")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("zookeeper.log")).unwrap_or_default()
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// ZooKeeper and four ClickHouse nodes: `nodes[0]`, `nodes[1]` are shard 1's replicas,
/// `nodes[2]`, `nodes[3]` shard 2's.
pub struct Cluster {
    /// The servers (dropped before ZooKeeper: fields drop in order).
    pub nodes: Vec<ClickHouse>,
    /// The coordination service.
    pub zookeeper: ZooKeeper,
}

impl Cluster {
    /// Starts the whole cluster under `dir`; `None` only when told to skip.
    pub fn start(dir: &Path) -> Option<Cluster> {
        if skip() {
            return None;
        }
        let _ = std::fs::remove_dir_all(dir);
        let zookeeper = ZooKeeper::start(&dir.join("zookeeper"));
        let tcp: Vec<u16> = (0..4).map(|_| free_port()).collect();
        let replica =
            |port: u16| format!("<replica><host>127.0.0.1</host><port>{port}</port></replica>");
        let shards: String = tcp
            .chunks(2)
            .map(|pair| {
                format!(
                    "<shard><internal_replication>true</internal_replication>{}{}</shard>",
                    replica(pair[0]),
                    replica(pair[1])
                )
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, port) in tcp.iter().enumerate() {
            let extra = format!(
                "<tcp_port>{port}</tcp_port>
    <interserver_http_port>{interserver}</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <zookeeper><node index=\"1\"><host>127.0.0.1</host><port>{zk}</port></node>
        <session_timeout_ms>{SESSION_TIMEOUT_MS}</session_timeout_ms></zookeeper>
    <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
    <macros><shard>{shard}</shard><replica>r{replica}</replica></macros>
    <remote_servers><{CLUSTER}>{shards}</{CLUSTER}></remote_servers>",
                interserver = free_port(),
                zk = zookeeper.port,
                shard = i / 2 + 1,
                replica = i % 2 + 1,
            );
            let node = ClickHouse::start_configured(&dir.join(format!("node{}", i + 1)), extra)
                .expect("ClickHouse was not skipped a moment ago");
            nodes.push(node);
        }
        Some(Cluster { nodes, zookeeper })
    }

    /// Waits until both replicas of each shard hold the same rows in each of `tables` (the
    /// replicated `_local` tables of `db`), e.g. after a replica was killed and restarted.
    /// Panics after `limit` with the counts.
    pub fn wait_replicas_agree(&self, db: &str, tables: &[String], limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let counts: Vec<Vec<Option<u64>>> = tables
                .iter()
                .map(|t| {
                    self.nodes
                        .iter()
                        .map(|n| {
                            n.try_query(&format!("SELECT count() FROM {db}.{t}"))
                                .ok()
                                .and_then(|s| s.trim().parse().ok())
                        })
                        .collect()
                })
                .collect();
            let agree = counts
                .iter()
                .all(|c| c.iter().all(Option::is_some) && c[0] == c[1] && c[2] == c[3]);
            if agree {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the replicas did not agree within {limit:?}: {:?}",
                tables.iter().zip(&counts).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
