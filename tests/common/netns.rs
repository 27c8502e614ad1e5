//! A veth pair for live-capture tests: the replay end inside a network namespace of its own
//! (tcpreplay writes there), the capture end in the test's namespace, so that `stripwatch live`
//! captures on it and still reaches a ClickHouse server the test started on 127.0.0.1. Both
//! ends are deleted (and whatever still runs in the namespace killed) when it is dropped.
//!
//! Needs root and `ip`, `ethtool`, `tcpreplay` (`scripts/install-deps.sh` installs them); a
//! missing tool is a failure that names the package.

use std::process::{Command, Stdio};

/// Panics with the package to install when `tool` cannot be run.
pub fn need_tool(tool: &str, package: &str) {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "{tool} not found: install the Debian package {package} (scripts/install-deps.sh does)"
    );
}

/// Runs a command and insists it succeeded.
pub fn sh(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The namespace (with the replay end `swo0`) and the capture end's name in this namespace.
pub struct Veth {
    /// The namespace's name.
    pub ns: String,
    /// The capture end, in the test's own namespace.
    pub capture: String,
}

/// The replay end's name inside the namespace.
pub const REPLAY: &str = "swo0";

impl Veth {
    /// Makes the pair; names are unique per process and call (tests run in parallel).
    pub fn new() -> Veth {
        need_tool("ip", "iproute2");
        need_tool("ethtool", "ethtool");
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = std::process::id() % 100_000;
        let veth = Veth {
            ns: format!("swout-{id}-{n}"),
            capture: format!("swc{id}x{n}"),
        };
        let _ = Command::new("ip").args(["netns", "del", &veth.ns]).output();
        let _ = Command::new("ip")
            .args(["link", "del", &veth.capture])
            .output();
        sh(&["ip", "netns", "add", &veth.ns]);
        sh(&["ip", "-n", &veth.ns, "link", "set", "lo", "up"]);
        sh(&[
            "ip",
            "link",
            "add",
            &veth.capture,
            "type",
            "veth",
            "peer",
            "name",
            REPLAY,
            "netns",
            &veth.ns,
        ]);
        // Offloads off, so that frames arrive as they were captured (DESIGN.md, live capture);
        // IPv6 off, so the link carries nothing but the replay.
        let offloads = [
            "tso", "off", "gso", "off", "gro", "off", "tx", "off", "rx", "off",
        ];
        let mut inside = vec!["ip", "netns", "exec", &veth.ns, "ethtool", "-K", REPLAY];
        inside.extend(offloads);
        sh(&inside);
        let mut outside = vec!["ethtool", "-K", &veth.capture];
        outside.extend(offloads);
        sh(&outside);
        let v6_in = format!("net.ipv6.conf.{REPLAY}.disable_ipv6=1");
        sh(&["ip", "netns", "exec", &veth.ns, "sysctl", "-qw", &v6_in]);
        let v6_out = format!("net.ipv6.conf.{}.disable_ipv6=1", veth.capture);
        sh(&["sysctl", "-qw", &v6_out]);
        sh(&["ip", "-n", &veth.ns, "link", "set", REPLAY, "up"]);
        sh(&["ip", "link", "set", &veth.capture, "up"]);
        veth
    }

    /// `tcpreplay ARGS -i swo0 FILE` inside the namespace, not yet started.
    pub fn tcpreplay(&self, args: &[&str], file: &std::path::Path) -> Command {
        need_tool("tcpreplay", "tcpreplay");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, "tcpreplay", "-q"])
            .args(args)
            .args(["-i", REPLAY])
            .arg(file);
        c
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.ns])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).status();
                }
            });
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.capture])
            .stderr(Stdio::null())
            .status();
    }
}
