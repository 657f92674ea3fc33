//! A real Redis Cluster on loopback for the cluster tests: 3 masters and 3 replicas
//! (`redis-server --cluster-enabled yes`, joined by `redis-cli --cluster create`), all killed
//! on drop; failover on demand, and a copy of its keys into one standalone server so the
//! single-node state checks (`state.rs`) read the cluster's state unchanged.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{wait_for, RedisServer};

/// Six cluster nodes (the first three start as masters), killed on drop.
pub struct RedisCluster {
    children: Vec<Child>,
    /// The nodes' ports.
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    // The cluster bus listens on port + 10000: both must be free.
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Starts one cluster node on `port`, in its own directory under `dir`: a replica's initial
/// sync lands in `dump.rdb` before it is loaded, and nodes sharing one directory could load
/// each other's snapshots (a replica holding another master's keys).
fn start_node(dir: &std::path::Path, port: u16) -> Child {
    let own = dir.join(port.to_string());
    std::fs::create_dir_all(&own).unwrap();
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
        .args(["--cluster-node-timeout", "2000", "--repl-diskless-sync-delay", "0", "--dir"])
        .arg(&own)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/test.sh installs it)")
}

/// Waits (up to 10 s) until `child` answers on `port`; false when it exited first (the port
/// was taken) or another process answers there.
fn node_is(child: &mut Child, port: u16) -> bool {
    let began = std::time::Instant::now();
    while began.elapsed() < Duration::from_secs(10) {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        let pid = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("INFO").arg("server").query::<String>(&mut c));
        if let Ok(info) = pid {
            return info.lines().any(|l| l.trim() == format!("process_id:{}", child.id()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn node_conn(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap().get_connection().unwrap()
}

fn info(port: u16, what: &str) -> String {
    let mut c = node_conn(port);
    redis::cmd("CLUSTER").arg(what).query(&mut c).unwrap_or_default()
}

fn replication(port: u16) -> String {
    redis::cmd("INFO").arg("replication").query(&mut node_conn(port)).unwrap_or_default()
}

/// A `CLUSTER NODES` line: id, port, flags, master id (`-` for masters), slot ranges.
struct Node {
    id: String,
    port: u16,
    master: bool,
    of: String,
    slots: Vec<(u16, u16)>,
}

fn nodes(port: u16) -> Vec<Node> {
    info(port, "NODES")
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let addr = f.get(1)?.split('@').next()?;
            let flags = f.get(2)?;
            Some(Node {
                id: f[0].to_string(),
                port: addr.rsplit_once(':')?.1.parse().ok()?,
                master: flags.split(',').any(|x| x == "master") && !flags.contains("fail"),
                of: f.get(3)?.to_string(),
                slots: f[8.min(f.len())..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .filter_map(|s| {
                        let (a, b) = s.split_once('-').unwrap_or((s, s));
                        Some((a.parse().ok()?, b.parse().ok()?))
                    })
                    .collect(),
            })
        })
        .collect()
}

impl RedisCluster {
    /// Starts and joins the six nodes; returns once every node says `cluster_state:ok`.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // A probed port can be taken by another test's node before this one binds it (the
        // tests of a binary run in parallel): a node that exits, or a port answered by
        // another process, is started again on another port.
        let (mut ports, mut children): (Vec<u16>, Vec<Child>) = (Vec::new(), Vec::new());
        let began = std::time::Instant::now();
        while ports.len() < 6 {
            assert!(began.elapsed() < Duration::from_secs(30), "could not start six cluster nodes in 30 s");
            let p = free_port();
            if ports.contains(&p) {
                continue;
            }
            let mut child = start_node(dir.path(), p);
            if node_is(&mut child, p) {
                ports.push(p);
                children.push(child);
            } else {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let cluster = Self { children, ports, _dir: dir };
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli (scripts/test.sh installs it)");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        cluster.wait_ok();
        cluster
    }

    /// Waits until every node reports `cluster_state:ok` and knows 3 masters with slots, and
    /// every replica has finished its sync with its master (a replica still loading its
    /// first snapshot holds nothing: failing over to it would lose every key).
    fn wait_ok(&self) {
        wait_for("the cluster to be ok on every node", Duration::from_secs(30), || {
            self.ports.iter().all(|&p| {
                info(p, "INFO").contains("cluster_state:ok")
                    && nodes(p).iter().filter(|n| n.master && !n.slots.is_empty()).count() == 3
            })
        });
        wait_for("every replica in sync with its master", Duration::from_secs(30), || {
            self.ports.iter().all(|&p| {
                let r = replication(p);
                !r.contains("role:slave")
                    || (r.contains("master_link_status:up") && r.contains("master_sync_in_progress:0"))
            })
        });
    }

    /// Every node's view of `key`: its role, whether it serves the key's slot, and the
    /// key's hash there (`HGETALL`, asked with READONLY so replicas answer). For failure
    /// messages.
    pub fn describe(&self, key: &str) -> String {
        let mut out = String::new();
        for &p in &self.ports {
            let mut c = node_conn(p);
            let _: redis::RedisResult<()> = redis::cmd("READONLY").query(&mut c);
            let role = replication(p).lines().find(|l| l.starts_with("role:")).unwrap_or("role:?").to_string();
            let hash: redis::RedisResult<Vec<String>> = redis::cmd("HGETALL").arg(key).query(&mut c);
            let hash = match hash {
                Ok(h) => format!("{h:?}"),
                Err(e) => format!("({e})"),
            };
            out.push_str(&format!("\n  :{p} {role} {key} = {hash}"));
        }
        out
    }

    /// The seed-node list for `enrich.redis_url`: two of the nodes, comma-separated.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/,redis://127.0.0.1:{}/", self.ports[0], self.ports[1])
    }

    /// A cluster connection (test side).
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        let seeds: Vec<String> = self.ports.iter().map(|p| format!("redis://127.0.0.1:{p}/")).collect();
        redis::cluster::ClusterClient::new(seeds).unwrap().get_connection().unwrap()
    }

    /// Freezes the node on `port` (SIGSTOP) so clients time out while its data survives, or
    /// lets it go on (SIGCONT), as [`super::RedisServer::freeze`] does.
    pub fn freeze(&self, port: u16, frozen: bool) {
        let k = self.ports.iter().position(|&p| p == port).expect("a node of this cluster");
        let pid = self.children[k].id().to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        assert!(Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }

    /// The port of the master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut node_conn(self.ports[0])).unwrap();
        nodes(self.ports[0])
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
            .port
    }

    /// Fails the master of `key`'s slot over to its replica (`CLUSTER FAILOVER` sent to the
    /// replica: the coordinated manual failover); returns (old master, new master) ports once
    /// every node agrees and the cluster is ok.
    pub fn failover(&self, key: &str) -> (u16, u16) {
        let old = self.master_of(key);
        let all = nodes(old);
        let id = &all.iter().find(|n| n.port == old).unwrap().id;
        let replica = all.iter().find(|n| &n.of == id).expect("the master has a replica").port;
        let _: () = redis::cmd("CLUSTER").arg("FAILOVER").query(&mut node_conn(replica)).unwrap();
        wait_for("the replica to take over", Duration::from_secs(30), || {
            self.ports.iter().all(|&p| self.master_of_at(p, key) == Some(replica))
        });
        self.wait_ok();
        (old, replica)
    }

    fn master_of_at(&self, port: u16, key: &str) -> Option<u16> {
        let slot: u16 = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut node_conn(port)).ok()?;
        nodes(port)
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|&(a, b)| a <= slot && slot <= b))
            .map(|n| n.port)
    }

    /// Copies every key of `from` (value, no TTL, by DUMP/RESTORE) into the cluster, each
    /// to its slot's master: a store written by another tool (Feast) onto a cluster.
    pub fn copy_from(&self, from: &RedisServer) -> usize {
        let mut src = from.conn();
        let mut dst = self.conn();
        let mut copied = 0;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) =
                redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000).query(&mut src).unwrap();
            for k in keys {
                let dump: Vec<u8> = redis::cmd("DUMP").arg(&k).query(&mut src).unwrap();
                let _: () = redis::cmd("RESTORE").arg(&k).arg(0).arg(dump).arg("REPLACE").query(&mut dst).unwrap();
                copied += 1;
            }
            if next == 0 {
                return copied;
            }
            cursor = next;
        }
    }

    /// Copies every key of every master (value and TTL, by DUMP/RESTORE) into `to`, so the
    /// standalone state checks read what the cluster holds. Call once writers have stopped.
    pub fn copy_into(&self, to: &RedisServer) -> usize {
        let mut dst = to.conn();
        let mut copied = 0;
        for n in nodes(self.ports[0]).into_iter().filter(|n| n.master) {
            let mut src = node_conn(n.port);
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) =
                    redis::cmd("SCAN").arg(cursor).arg("COUNT").arg(1000).query(&mut src).unwrap();
                for k in keys {
                    let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(&k).query(&mut src).unwrap();
                    let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut src).unwrap();
                    if let Some(d) = dump {
                        let _: () = redis::cmd("RESTORE")
                            .arg(&k)
                            .arg(ttl.max(0))
                            .arg(d)
                            .arg("REPLACE")
                            .query(&mut dst)
                            .unwrap();
                        copied += 1;
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        copied
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
