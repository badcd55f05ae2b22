//! A three-node nats-server cluster on loopback, each node configured like
//! `NatsServer::start` (accounts AUTH, APP, TEAM and SYS, auth callout on),
//! plus a full mesh of routes.
//!
//! With auth callout in a cluster, every server sends the callout requests of
//! its own clients on `$SYS.REQ.USER.AUTH` in the AUTH account; service
//! replicas connected to any node share them through the queue group, the
//! requests and answers crossing the routes where needed.

use std::time::{Duration, Instant};

use super::{callout_conf, free_port, http_get, NatsServer};

pub const NODES: usize = 3;

pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    /// The monitoring port of each node (`/routez`).
    http_ports: Vec<u16>,
    killed: [bool; NODES],
}

impl NatsCluster {
    /// Starts three servers and returns once every node has routes to both
    /// of the others. With `xkey`, the servers seal requests to that key.
    pub async fn start(issuer_public: &str, xkey_public: Option<&str>) -> NatsCluster {
        let client_ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
        let cluster_ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
        let http_ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect();
        // Every node lists all three, itself included (nats-server skips a
        // route to itself), as a deployment's shared config would.
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = (0..NODES)
            .map(|i| {
                let conf = format!(
                    r#"server_name: n{i}
listen: 127.0.0.1:{port}
http: 127.0.0.1:{http}
max_control_line: 64KB
{callout}cluster {{
  name: callout-test
  listen: 127.0.0.1:{cluster}
  routes: [ {routes} ]
}}
"#,
                    port = client_ports[i],
                    http = http_ports[i],
                    cluster = cluster_ports[i],
                    callout = callout_conf(issuer_public, xkey_public, None, None, &[]),
                );
                NatsServer::start_with(tempfile::tempdir().unwrap(), client_ports[i], conf)
            })
            .collect();
        let cluster = NatsCluster {
            nodes,
            http_ports,
            killed: [false; NODES],
        };
        cluster.wait_for_routes(Duration::from_secs(15)).await;
        cluster
    }

    /// Waits until each node's `/routez` lists routes to both other nodes,
    /// as many to one as to the other (nats-server opens a pool of routes
    /// per peer, plus one for the system account; the pool is complete when
    /// the counts agree).
    async fn wait_for_routes(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for (i, &port) in self.http_ports.iter().enumerate() {
            loop {
                let (_, body) = http_get(port, "/routez").await;
                let routez: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let per_peer = |peer: usize| {
                    routez["routes"]
                        .as_array()
                        .map(|routes| {
                            routes
                                .iter()
                                .filter(|r| r["remote_name"] == format!("n{peer}").as_str())
                                .count()
                        })
                        .unwrap_or(0)
                };
                let counts: Vec<usize> = (0..NODES).filter(|&p| p != i).map(per_peer).collect();
                if counts.iter().all(|&c| c > 0 && c == counts[0]) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "n{i} has routes {counts:?} to its peers after {timeout:?}:\n{body}\n{}",
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// The client URL of node `i`.
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Every node's client URL, as a service listing the whole cluster
    /// would have them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// The node whose client port is `port` (as in a client's server info).
    pub fn node_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port == port)
    }

    /// Kills node `i` with SIGKILL: its clients lose their connections and
    /// the other nodes lose their routes to it, with nothing flushed.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].stop();
        self.killed[i] = true;
    }

    pub fn is_up(&self, i: usize) -> bool {
        !self.killed[i]
    }

    pub fn log_text(&self, i: usize) -> String {
        self.nodes[i].log_text()
    }

    fn logs(&self) -> String {
        (0..NODES)
            .map(|i| format!("---- nats-server n{i} log ----\n{}", self.log_text(i)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for NatsCluster {
    /// A failing test shows what every node said.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
