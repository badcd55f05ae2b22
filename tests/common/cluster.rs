//! A three-node nats-server cluster on loopback, each node configured like
//! `NatsServer::start` (accounts AUTH, APP, TEAM and SYS, auth callout on),
//! plus a full mesh of routes; and `ClusterStack`, a whole deployment on
//! such a cluster (with clustered JetStream, in server or operator mode)
//! with a service replica on each of the first nodes.
//!
//! With auth callout in a cluster, every server sends the callout requests of
//! its own clients on `$SYS.REQ.USER.AUTH` in the AUTH account; service
//! replicas connected to any node share them through the queue group, the
//! requests and answers crossing the routes where needed.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{
    callout_conf, connect, dev_issuer, free_ports, http_get, operator_mode_pieces,
    register_sentinel, server_mode, wait_for_log, CalloutKeys, CalloutService, DevIssuer,
    NatsServer, Operator, OperatorSetup, ServiceOptions, TestClient, AUDIENCE,
};

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
        NatsCluster::start_nodes(|_| callout_conf(issuer_public, xkey_public, None, None, &[]))
            .await
    }

    /// Starts three servers, each with the accounts and auth callout
    /// `node_conf` writes given the node's own directory (where a
    /// JetStream `store_dir` goes), and returns once every node has routes
    /// to both of the others (and, when the config turns JetStream on,
    /// the JetStream cluster has a meta leader).
    pub async fn start_nodes(node_conf: impl Fn(&Path) -> String) -> NatsCluster {
        // Free ports are chosen before the servers bind them, and a test
        // running beside this one may take one meanwhile: then all three
        // start again on new ports.
        let mut attempts = 0;
        let (nodes, http_ports) = loop {
            attempts += 1;
            match NatsCluster::try_start_nodes(&node_conf) {
                Ok(started) => break started,
                Err(log) if attempts < 5 && log.contains("address already in use") => continue,
                Err(log) => panic!("{log}"),
            }
        };
        let cluster = NatsCluster {
            nodes,
            http_ports,
            killed: [false; NODES],
        };
        cluster.wait_for_routes(Duration::from_secs(15)).await;
        cluster.wait_for_jetstream().await;
        cluster
    }

    /// One try of `start_nodes`: the nodes and their monitoring ports, or
    /// the log of a node that did not start (those started are stopped as
    /// they drop).
    fn try_start_nodes(
        node_conf: &impl Fn(&Path) -> String,
    ) -> Result<(Vec<NatsServer>, Vec<u16>), String> {
        let ports = free_ports(3 * NODES);
        let (client_ports, rest) = ports.split_at(NODES);
        let (cluster_ports, http_ports) = rest.split_at(NODES);
        let (client_ports, http_ports) = (client_ports.to_vec(), http_ports.to_vec());
        // Every node lists all three, itself included (nats-server skips a
        // route to itself), as a deployment's shared config would.
        let routes = cluster_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let nodes = (0..NODES)
            .map(|i| {
                let dir = tempfile::tempdir().unwrap();
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
                    callout = node_conf(dir.path()),
                );
                NatsServer::try_start_with(dir, client_ports[i], conf)
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok((nodes, http_ports))
    }

    /// With JetStream on: waits until every node knows the JetStream
    /// cluster's meta leader (before, nothing can create a stream).
    async fn wait_for_jetstream(&self) {
        let deadline = Instant::now() + super::HANG_GUARD;
        for (i, &port) in self.http_ports.iter().enumerate() {
            loop {
                let (_, body) = http_get(port, "/jsz").await;
                let jsz: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if jsz["disabled"] == true
                    || jsz["meta_cluster"]["leader"]
                        .as_str()
                        .is_some_and(|l| !l.is_empty())
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "n{i} knows no JetStream meta leader:\n{body}\n{}",
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
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

/// A whole deployment on a three-node cluster: the development issuer,
/// the cluster (clustered JetStream with `opts.jetstream`, each node its
/// own store), and service replicas sharing the queue group, replica `i`
/// connected to node `i`. In server mode the nodes have
/// `callout_conf`'s accounts; in operator mode (`opts.operator`, or
/// `NATS_OIDC_CALLOUT_TEST_MODE=operator`) every node trusts the same
/// operator and preloads the same accounts, and clients of every node
/// present the sentinel.
pub struct ClusterStack {
    pub issuer: DevIssuer,
    pub keys: CalloutKeys,
    pub cluster: NatsCluster,
    /// Replica `i` is connected to node `i`.
    pub replicas: Vec<CalloutService>,
    /// In operator mode: the operator, accounts and their keys.
    pub operator: Option<OperatorSetup>,
    /// Operator mode's creds files (the service's, the sentinel's, a
    /// system user's) and signing keys, shared by the replicas.
    creds: tempfile::TempDir,
}

impl ClusterStack {
    /// Starts the cluster and `replicas` replicas (1 to `NODES`) of the
    /// service `opts` describes, and returns once each replica has loaded
    /// its issuer's keys (and the revocation list, with one) and every node
    /// admits a client (the replicas' subscriptions have crossed the
    /// routes): the dev issuer's user `probe` with role `admin`, which the
    /// config must admit.
    pub async fn start(mut opts: ServiceOptions, replicas: usize) -> ClusterStack {
        assert!((1..=NODES).contains(&replicas), "{replicas} replicas");
        let issuer = dev_issuer(&opts).await;
        let creds = tempfile::tempdir().unwrap();
        let operator = opts.operator || super::operator_mode();
        let js = opts.jetstream;
        let jetstream = move |dir: &Path| js.then(|| dir.join("js"));
        let (keys, cluster, setup) = if operator {
            let Operator {
                setup,
                keys,
                sentinel,
            } = operator_mode_pieces(&mut opts, &issuer.issuer(), creds.path());
            let cluster = NatsCluster::start_nodes(|dir| {
                let store = jetstream(dir)
                    .map(|js| format!("jetstream {{ store_dir: \"{}\" }}\n", js.display()))
                    .unwrap_or_default();
                format!("{store}{}", setup.nats_conf())
            })
            .await;
            for url in cluster.urls() {
                register_sentinel(&url, sentinel.clone());
            }
            (keys, cluster, Some(setup))
        } else {
            let (keys, layout) = server_mode(&mut opts, &issuer.issuer());
            let xkey_public = keys.xkey.public_key();
            let cluster = NatsCluster::start_nodes(|dir| {
                callout_conf(
                    &keys.issuer.public_key(),
                    opts.xkey.then_some(xkey_public.as_str()),
                    jetstream(dir).as_deref(),
                    layout.as_ref(),
                    &opts.auth_users,
                )
            })
            .await;
            (keys, cluster, None)
        };
        let revocation_list = opts.revocation.contains("kv_bucket");
        let first = CalloutService::start(&cluster.url(0), &issuer.issuer(), &keys, opts).await;
        let mut all = vec![first];
        for node in 1..replicas {
            let replica = all[0].replica_on(&cluster.url(node)).await;
            wait_for_log(&replica.log, "issuer keys loaded", Duration::ZERO).await;
            if revocation_list {
                wait_for_log(&replica.log, "revocation list loaded", Duration::ZERO).await;
            }
            all.push(replica);
        }
        let stack = ClusterStack {
            issuer,
            keys,
            cluster,
            replicas: all,
            operator: setup,
            creds,
        };
        let probe = stack.issuer.token("probe", AUDIENCE, &["admin"], 300);
        for node in 0..NODES {
            let deadline = Instant::now() + super::HANG_GUARD;
            while let Err(e) = connect(&stack.url(node), &probe).await {
                assert!(Instant::now() < deadline, "n{node} never admitted: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        stack
    }

    /// A client of the callout's own account on node `node`, which skips
    /// the callout: the `auth` user, or in operator mode the service's own
    /// credentials (for the buckets the service keeps there).
    pub async fn callout_account_client(&self, node: usize) -> async_nats::Client {
        match &self.operator {
            None => super::callout_user(&self.url(node)).await,
            Some(_) => async_nats::ConnectOptions::with_credentials_file(
                self.creds.path().join("service.creds"),
            )
            .await
            .expect("service creds")
            .connect(self.url(node))
            .await
            .expect("the service's user connects"),
        }
    }

    /// The client URL of node `node`.
    pub fn url(&self, node: usize) -> String {
        self.cluster.url(node)
    }

    /// A client of node `node` with `token` as its password (and the
    /// sentinel in operator mode).
    pub async fn connect(
        &self,
        node: usize,
        token: &str,
    ) -> Result<TestClient, async_nats::ConnectError> {
        connect(&self.url(node), token).await
    }

    /// How many times the replicas' logs together say `needle`.
    pub fn count_in_logs(&self, needle: &str) -> usize {
        self.replicas
            .iter()
            .map(|r| super::count_in_log(&r.log, needle))
            .sum()
    }

    /// Every replica's log, for a failure's message.
    pub fn logs(&self) -> String {
        self.replicas
            .iter()
            .enumerate()
            .map(|(i, r)| format!("---- service replica {i} log ----\n{}", r.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for ClusterStack {
    /// A failing test shows what every replica said (the cluster, what
    /// every node said).
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}
