//! A small network lab for the end-to-end tests: network namespaces created by the test,
//! joined by a bridge in the gateway's namespace, with the real programs (gatehouse,
//! wireguard-go, `wg`, `ip`, python3 for TCP transfers) running inside them.
//!
//! Everything is torn down on drop, whatever the outcome: processes started here are
//! killed by PID, namespaces (and with them every interface inside) deleted, UAPI sockets
//! removed. Names carry the test process's PID so parallel tests never collide.
//!
//! Layout: `<p>-gw` holds bridge `br0` at 10.99.0.1/24 and the gateway; client `i` lives
//! in `<p>-c<i>` at 10.99.0.(10+i) on a veth enslaved to the bridge; `<p>-lan` is a LAN
//! host at 192.168.50.2 behind the gateway's `lan0` (192.168.50.1).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const GATEHOUSE: &str = env!("CARGO_BIN_EXE_gatehouse");
pub const GW_BRIDGE: &str = "10.99.0.1";
pub const LAN_HOST: &str = "192.168.50.2";
pub const UAPI_DIR: &str = "/var/run/wireguard";

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub fn xfer_script() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/xfer.py").to_owned()
}

/// Fails the test (never skips it) when it cannot build namespaces.
pub fn require_root() {
    // /proc/self/status carries the effective uid.
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap();
    assert_eq!(
        euid, "0",
        "the end-to-end tunnel tests create network namespaces and TUN devices: run them as \
         root (make test does, on the CI machines)"
    );
}

/// Runs a command to completion; panics with its output if it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command; returns whether it succeeded and its stdout+stderr.
pub fn try_run(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Polls `f` until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A process started by the lab; killed (SIGKILL, by its PID) and reaped on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit on its own; returns its log.
    pub fn wait(mut self, timeout: Duration) -> String {
        let name = self.name.clone();
        let status = wait_for(&format!("{name} to exit"), timeout, || {
            self.child.try_wait().unwrap()
        });
        assert!(
            status.success(),
            "{name} exited with {status}:\n{}",
            self.log_text()
        );
        self.log_text()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.name, self.log_text());
        }
    }
}

/// A running gateway in a lab (see [`Lab::with_gateway`]).
pub struct Gateway {
    /// Its network namespace.
    pub ns: String,
    /// Its tunnel interface (and UAPI socket) name.
    pub ifname: String,
    pub config: PathBuf,
    /// Index of the `gatehouse up` process ([`Lab::proc`]).
    pub proc: usize,
}

/// The namespaces and everything started in them.
pub struct Lab {
    pub prefix: String,
    pub dir: tempfile::TempDir,
    namespaces: Vec<String>,
    procs: Vec<Proc>,
    sockets: Vec<PathBuf>,
}

impl Lab {
    /// The gateway namespace with its bridge, and a LAN namespace behind it.
    pub fn new() -> Lab {
        require_root();
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("gh{}{n}", std::process::id() % 100_000);
        let mut lab = Lab {
            prefix,
            dir: tempfile::tempdir().unwrap(),
            namespaces: Vec::new(),
            procs: Vec::new(),
            sockets: Vec::new(),
        };
        let gw = lab.add_ns("gw");
        run(&["ip", "-n", &gw, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &gw, "addr", "add", "10.99.0.1/24", "dev", "br0"]);
        run(&["ip", "-n", &gw, "link", "set", "br0", "up"]);
        let lan = lab.add_ns("lan");
        run(&[
            "ip", "-n", &gw, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
            "netns", &lan,
        ]);
        run(&[
            "ip",
            "-n",
            &gw,
            "addr",
            "add",
            "192.168.50.1/24",
            "dev",
            "lan0",
        ]);
        run(&["ip", "-n", &gw, "link", "set", "lan0", "up"]);
        run(&[
            "ip",
            "-n",
            &lan,
            "addr",
            "add",
            "192.168.50.2/24",
            "dev",
            "eth0",
        ]);
        run(&["ip", "-n", &lan, "link", "set", "eth0", "up"]);
        lab
    }

    /// The usual lab: `gatehouse up` in the gateway namespace, tunnel in `mode` ("tun" or
    /// "userspace") configured by [`Lab::gateway_config`], and the NVR its forward points
    /// at (a TCP sink on the LAN host, port 8554).
    pub fn with_gateway(mode: &str) -> (Lab, Gateway) {
        let mut lab = Lab::new();
        let ns = lab.gw();
        let ifname = lab.ifname("w");
        let config = lab.gateway_config(mode, &ifname, "");
        let lan = lab.lan();
        lab.tcp_sink(&lan, "0.0.0.0", 8554);
        let proc = lab.start_gateway(&config, &ifname);
        let gw = Gateway {
            ns,
            ifname,
            config,
            proc,
        };
        (lab, gw)
    }

    fn add_ns(&mut self, what: &str) -> String {
        let name = format!("{}-{what}", self.prefix);
        run(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }

    pub fn gw(&self) -> String {
        format!("{}-gw", self.prefix)
    }

    pub fn lan(&self) -> String {
        format!("{}-lan", self.prefix)
    }

    /// A unique interface name (at most 15 bytes) with `tag` at the end.
    pub fn ifname(&self, tag: &str) -> String {
        let name = format!("{}{tag}", self.prefix);
        assert!(name.len() <= 15, "interface name {name} too long");
        name
    }

    /// Client namespace `i`, on the bridge at 10.99.0.(10+i); returns its name.
    pub fn add_client(&mut self, i: u8) -> String {
        let ns = self.add_ns(&format!("c{i}"));
        let gw = self.gw();
        let port = format!("c{i}");
        run(&[
            "ip", "-n", &gw, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ]);
        run(&["ip", "-n", &gw, "link", "set", &port, "master", "br0", "up"]);
        let addr = format!("10.99.0.{}/24", 10 + u16::from(i));
        run(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
        run(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
        ns
    }

    /// Starts `args` inside namespace `ns`, output to a log file.
    pub fn spawn(&mut self, name: &str, ns: &str, args: &[&str], env: &[(&str, &str)]) -> usize {
        let log = self.dir.path().join(format!("{name}.log"));
        let out = fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            log,
        });
        self.procs.len() - 1
    }

    pub fn proc(&mut self, i: usize) -> &mut Proc {
        &mut self.procs[i]
    }

    /// Takes a process out of the lab (to wait for it); it is still killed on drop.
    pub fn take(&mut self, i: usize) -> Proc {
        self.procs.remove(i)
    }

    /// Runs a command inside `ns` to completion (panics on failure).
    pub fn exec(&self, ns: &str, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        run(&full)
    }

    pub fn try_exec(&self, ns: &str, args: &[&str]) -> (bool, String) {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        try_run(&full)
    }

    /// Whether `count` pings from `ns` to `addr` all come back (1 s timeout each).
    pub fn ping(&self, ns: &str, addr: &str, count: u32) -> bool {
        let c = count.to_string();
        self.try_exec(ns, &["ping", "-c", &c, "-i", "0.2", "-W", "1", "-q", addr])
            .0
    }

    /// Waits until one ping from `ns` reaches `addr` (handshakes take a moment).
    pub fn wait_ping(&self, ns: &str, addr: &str) {
        wait_for(
            &format!("ping from {ns} to {addr}"),
            Duration::from_secs(20),
            || self.ping(ns, addr, 1).then_some(()),
        );
    }

    /// A TCP sink (xfer.py serve) on `addr:port` inside `ns`, ready when this returns.
    pub fn tcp_sink(&mut self, ns: &str, addr: &str, port: u16) {
        let script = xfer_script();
        let p = port.to_string();
        let i = self.spawn(
            &format!("sink-{ns}-{port}"),
            ns,
            &["python3", "-u", &script, "serve", addr, &p],
            &[],
        );
        let log = self.procs[i].log.clone();
        wait_for("the TCP sink to listen", Duration::from_secs(10), || {
            fs::read_to_string(&log)
                .ok()
                .filter(|l| l.contains("listening"))
        });
    }

    /// Sends `bytes` from `ns` to `addr:port` (optionally paced); asserts that the sink
    /// received exactly what was sent (byte count and SHA-256).
    pub fn transfer(&self, ns: &str, addr: &str, port: u16, bytes: u64, rate: Option<u64>) {
        let script = xfer_script();
        let p = port.to_string();
        let b = bytes.to_string();
        let r = rate.map(|r| r.to_string());
        let mut args = vec!["python3", &script, "send", addr, &p, &b];
        if let Some(r) = &r {
            args.push(r);
        }
        let out = self.exec(ns, &args);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "unexpected transfer output: {out}");
        assert!(lines[0].starts_with(&format!("{bytes} ")), "{out}");
        assert_eq!(
            lines[0], lines[1],
            "what arrived differs from what was sent"
        );
    }

    /// Whether a TCP connection from `ns` to `addr:port` opens within 3 s.
    pub fn connects(&self, ns: &str, addr: &str, port: u16) -> bool {
        let script = xfer_script();
        let out = self.exec(ns, &["python3", &script, "probe", addr, &port.to_string()]);
        out.trim() == "connected"
    }

    /// An HTTP GET from `ns`; the body, or None if it failed.
    pub fn http_get(&self, ns: &str, url: &str) -> Option<String> {
        let (ok, out) = self.try_exec(ns, &["curl", "-sS", "-m", "5", "--fail", url]);
        ok.then(|| out.trim().to_owned())
    }

    /// Records a UAPI socket to remove on drop (for daemons killed before they clean up).
    pub fn own_socket(&mut self, ifname: &str) {
        self.sockets
            .push(Path::new(UAPI_DIR).join(format!("{ifname}.sock")));
    }

    /// Starts wireguard-go as interface `ifname` in `ns` and configures it from a client
    /// config as `gatehouse peer add` prints it: the wg-quick keys (Address, MTU, DNS) are
    /// applied with `ip`, as wg-quick does, and the rest goes to `wg setconf` unchanged.
    pub fn wireguard_go_client(&mut self, ns: &str, ifname: &str, client_conf: &str) {
        self.own_socket(ifname);
        let i = self.spawn(
            &format!("wireguard-go-{ifname}"),
            ns,
            &["wireguard-go", "-f", ifname],
            &[("LOG_LEVEL", "error")],
        );
        let sock = Path::new(UAPI_DIR).join(format!("{ifname}.sock"));
        wait_for(
            "wireguard-go's UAPI socket",
            Duration::from_secs(10),
            || sock.exists().then_some(()),
        );
        assert!(self.procs[i].is_running());
        let (wg_conf, address, mtu) = strip_wg_quick(client_conf);
        let path = self.dir.path().join(format!("{ifname}.conf"));
        fs::write(&path, wg_conf).unwrap();
        self.exec(ns, &["wg", "setconf", ifname, path.to_str().unwrap()]);
        for a in &address {
            self.exec(ns, &["ip", "addr", "add", a, "dev", ifname]);
        }
        let mtu = mtu.unwrap_or_else(|| "1420".into());
        self.exec(ns, &["ip", "link", "set", ifname, "mtu", &mtu, "up"]);
        self.exec(ns, &["ip", "route", "add", "10.77.0.0/24", "dev", ifname]);
    }

    /// Writes a gateway config (TUN or userspace mode) and returns its path.
    pub fn gateway_config(&self, mode: &str, ifname: &str, extra: &str) -> PathBuf {
        let data = self.dir.path().join("data");
        let firewall = if mode == "tun" { "nftables" } else { "none" };
        let text = format!(
            "[general]\ndata_dir = \"{}\"\n\n[tunnel]\ninterface = \"{ifname}\"\nmode = \"{mode}\"\n\
             listen_port = 51820\naddress = \"10.77.0.1/24\"\npublic_endpoint = \"{GW_BRIDGE}:51820\"\n\
             uapi_dir = \"{UAPI_DIR}\"\nfirewall = \"{firewall}\"\n\n\
             [[tunnel.service]]\nname = \"console\"\nport = 80\ntarget = \"127.0.0.1:8080\"\n\n\
             [[tunnel.forward]]\nname = \"nvr\"\nport = 554\ntarget = \"{LAN_HOST}:8554\"\n\n\
             {extra}\n[hub]\nhttp_listen = \"127.0.0.1:8080\"\n",
            data.display()
        );
        let path = self.dir.path().join("gatehouse.toml");
        fs::write(&path, text).unwrap();
        path
    }

    /// Starts `gatehouse up` in the gateway namespace and waits for the tunnel and the hub.
    pub fn start_gateway(&mut self, config: &Path, ifname: &str) -> usize {
        self.own_socket(ifname);
        let gw = self.gw();
        let i = self.spawn(
            "gatehouse",
            &gw,
            &[GATEHOUSE, "--config", config.to_str().unwrap(), "up"],
            &[],
        );
        let log = self.procs[i].log.clone();
        wait_for("gatehouse up", Duration::from_secs(20), || {
            let l = fs::read_to_string(&log).unwrap_or_default();
            (l.contains("tunnel up") && l.contains("hub listening")).then_some(())
        });
        i
    }

    /// Runs the gatehouse CLI (in the root namespace: it only edits files and signals).
    pub fn gatehouse(&self, config: &Path, args: &[&str]) -> String {
        let mut full = vec![GATEHOUSE, "--config", config.to_str().unwrap()];
        full.extend_from_slice(args);
        run(&full)
    }

    /// `wg show IF dump` peer lines inside `ns`, as (public key, endpoint, latest
    /// handshake, rx, tx).
    pub fn wg_dump(&self, ns: &str, ifname: &str) -> Vec<(String, String, u64, u64, u64)> {
        let out = self.exec(ns, &["wg", "show", ifname, "dump"]);
        out.lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (
                    f[0].to_owned(),
                    f[2].to_owned(),
                    f[4].parse().unwrap(),
                    f[5].parse().unwrap(),
                    f[6].parse().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.procs.clear();
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for s in &self.sockets {
            let _ = fs::remove_file(s);
        }
    }
}

/// Splits a wg-quick style config into what `wg setconf` accepts and the wg-quick keys.
pub fn strip_wg_quick(conf: &str) -> (String, Vec<String>, Option<String>) {
    let mut kept = String::new();
    let mut address = Vec::new();
    let mut mtu = None;
    for line in conf.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let value = line.split_once('=').map(|(_, v)| v.trim().to_owned());
        match key {
            "Address" => address.extend(value.unwrap().split(',').map(|a| a.trim().to_owned())),
            "MTU" => mtu = value,
            "DNS" | "Table" | "PreUp" | "PostUp" | "PreDown" | "PostDown" | "SaveConfig" => {}
            _ => {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    (kept, address, mtu)
}
