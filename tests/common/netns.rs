//! A network namespace joined to this one by a veth pair, for partition tests: processes run
//! inside it (`ip netns exec`) reach a server listening on the root side's address, and
//! iptables rules inside the namespace drop that traffic (a partition, not a reset) without
//! touching anything outside. Needs root and iptables (scripts/setup-test.sh installs it).
//!
//! Names carry the test process's id, so namespaces and links a killed run left behind are
//! recognised and removed by the next run; everything is removed on drop, also after a
//! panic.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Project, Up, SLUICE};

const NS_PREFIX: &str = "sluice-chaos-";
const HOST_IF_PREFIX: &str = "sch";
const NS_IF_PREFIX: &str = "scn";

/// Whether this process runs as root (namespaces and iptables need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (iproute2/iptables; scripts/setup-test.sh installs iptables): {e}"))
}

fn run_ok(program: &str, args: &[&str]) {
    let out = run(program, args);
    assert!(out.status.success(), "{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces and host-side links left by runs whose process is gone.
fn sweep_stale() {
    let listed = String::from_utf8_lossy(&run("ip", &["netns", "list"]).stdout).into_owned();
    for name in listed.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name.strip_prefix(NS_PREFIX).and_then(|rest| rest.split('-').next()?.parse::<u32>().ok()) else {
            continue;
        };
        if !pid_alive(pid) {
            let _ = run("ip", &["netns", "del", name]);
        }
    }
    let links = String::from_utf8_lossy(&run("ip", &["-o", "link", "show"]).stdout).into_owned();
    for line in links.lines() {
        // "12: sch123x0@if11: <...>"
        let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) else { continue };
        let Some(pid) = name.strip_prefix(HOST_IF_PREFIX).and_then(|rest| rest.split('x').next()?.parse::<u32>().ok()) else {
            continue;
        };
        if !pid_alive(pid) {
            let _ = run("ip", &["link", "del", name]);
        }
    }
}

/// A third octet `X` such that no address of this machine is in 10.200.X.0/24.
fn free_subnet(seed: u32) -> u8 {
    let addresses = String::from_utf8_lossy(&run("ip", &["-o", "-4", "addr", "show"]).stdout).into_owned();
    (0..254u32)
        .map(|k| u8::try_from(seed.wrapping_add(k) % 254 + 1).unwrap())
        .find(|x| !addresses.contains(&format!("10.200.{x}.")))
        .expect("no free 10.200.X.0/24 subnet on this machine")
}

/// A namespace with a veth pair: `host_addr` on the root side, `ns_addr` inside.
pub struct NetNs {
    pub name: String,
    pub host_addr: String,
    pub ns_addr: String,
    host_if: String,
    cut: bool,
}

impl NetNs {
    /// Creates the namespace, or returns `None` (after saying why) when not run as root.
    pub fn create() -> Option<Self> {
        if !is_root() {
            eprintln!("SKIPPED: network namespaces and iptables need root (CI runs the tests as root)");
            return None;
        }
        sweep_stale();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let x = free_subnet(pid.wrapping_mul(7).wrapping_add(k));
        let ns = Self {
            name: format!("{NS_PREFIX}{pid}-{k}"),
            host_addr: format!("10.200.{x}.1"),
            ns_addr: format!("10.200.{x}.2"),
            host_if: format!("{HOST_IF_PREFIX}{pid}x{k}"),
            cut: false,
        };
        let ns_if = format!("{NS_IF_PREFIX}{pid}x{k}");
        // From here on, Drop removes whatever was made.
        run_ok("ip", &["netns", "add", &ns.name]);
        run_ok("ip", &["link", "add", &ns.host_if, "type", "veth", "peer", "name", &ns_if]);
        run_ok("ip", &["link", "set", &ns_if, "netns", &ns.name]);
        run_ok("ip", &["addr", "add", &format!("{}/24", ns.host_addr), "dev", &ns.host_if]);
        run_ok("ip", &["link", "set", &ns.host_if, "up"]);
        ns.exec_ok(&["ip", "addr", "add", &format!("{}/24", ns.ns_addr), "dev", &ns_if]);
        ns.exec_ok(&["ip", "link", "set", &ns_if, "up"]);
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        // Fail here, clearly, rather than at the cut.
        ns.exec_ok(&["iptables", "-w", "-L", "INPUT", "-n"]);
        Some(ns)
    }

    fn exec_ok(&self, command: &[&str]) {
        let mut args = vec!["netns", "exec", self.name.as_str()];
        args.extend_from_slice(command);
        run_ok("ip", &args);
    }

    fn rules(&self, op: &str) {
        self.exec_ok(&["iptables", "-w", op, "INPUT", "-s", &self.host_addr, "-j", "DROP"]);
        self.exec_ok(&["iptables", "-w", op, "OUTPUT", "-d", &self.host_addr, "-j", "DROP"]);
    }

    /// Drops every packet between the namespace and the root side's address, both ways.
    pub fn cut(&mut self) {
        assert!(!self.cut, "already cut");
        self.rules("-A");
        self.cut = true;
    }

    /// Removes the rules [`NetNs::cut`] added.
    pub fn heal(&mut self) {
        assert!(self.cut, "not cut");
        self.rules("-D");
        self.cut = false;
    }

    /// Starts `sluice up` inside the namespace against `nats_url` and waits until it is up
    /// (its log in the project folder; SIGKILLed on drop and when the test process dies).
    pub fn up(&self, project: &Project, nats_url: &str) -> Up {
        let mut command = Command::new("ip");
        // `ip netns exec` execs the command in place (no fork), so the death signal holds.
        command.args(["netns", "exec", &self.name, SLUICE]).arg("--dir").arg(project.path()).args(["--nats", nats_url, "up"]);
        project.spawn_up(command, "up-ns", &format!("sluice up (in namespace {})", self.name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // The rules live in the namespace and go with it; deleting it also deletes the veth
        // pair, but asynchronously, so the host side is deleted here too.
        let _ = run("ip", &["netns", "del", &self.name]);
        let _ = run("ip", &["link", "del", &self.host_if]);
    }
}
