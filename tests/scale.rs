//! Scale-out: service replicas in one queue group against a three-node
//! nats-server cluster, losing a replica and then a server under load.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::ConnectErrorKind;
use common::cluster::{NatsCluster, NODES};
use common::*;

/// Load tests take the machine's CPU for themselves: run one at a time, so
/// that a timing-sensitive one (nats-server refuses a connect whose callout
/// takes over 2 s) measures the service, not its neighbours.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Admitted,
    /// nats-server said "Authorization Violation": the service refused, or
    /// the callout request went unanswered until the server's timeout.
    Refused,
    /// The node could not be reached or dropped the connection.
    Unreachable,
}

/// One connect attempt made by the load generator.
#[derive(Debug)]
struct Attempt {
    worker: usize,
    valid: bool,
    node: usize,
    started: Instant,
    took: Duration,
    outcome: Outcome,
    error: Option<String>,
}

impl Attempt {
    fn ended(&self) -> Instant {
        self.started + self.took
    }

    /// In flight at `at`, or started within `grace` after it (the moment
    /// the survivors need to notice a dead connection).
    fn spans(&self, at: Instant, grace: Duration) -> bool {
        self.started <= at + grace && self.ended() >= at
    }
}

/// One client per token, connecting and disconnecting in a loop until `stop`
/// is set. Worker `w` starts on node `w % NODES`; like a client given every
/// node's URL, it moves on to the next node when its node cannot be reached.
/// (One URL per attempt, so each attempt's node is known.)
fn start_load(
    urls: Vec<String>,
    tokens: Vec<(String, bool)>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Attempt>>> {
    tokens
        .into_iter()
        .enumerate()
        .map(|(worker, (token, valid))| {
            let urls = urls.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut node = worker % NODES;
                let mut attempts = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let result = connect(&urls[node], &token).await;
                    let took = started.elapsed();
                    let (outcome, error) = match result {
                        Ok(_) => (Outcome::Admitted, None),
                        Err(e) if e.kind() == ConnectErrorKind::AuthorizationViolation => {
                            (Outcome::Refused, Some(e.to_string()))
                        }
                        Err(e) => (Outcome::Unreachable, Some(e.to_string())),
                    };
                    attempts.push(Attempt {
                        worker,
                        valid,
                        node,
                        started,
                        took,
                        outcome,
                        error,
                    });
                    if outcome == Outcome::Unreachable {
                        node = (node + 1) % NODES;
                    }
                    if outcome != Outcome::Admitted {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                attempts
            })
        })
        .collect()
}

/// The replicas; a failing test shows what each of them said.
struct Replicas(Vec<CalloutService>);

impl Drop for Replicas {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (i, r) in self.0.iter().enumerate() {
                eprintln!("---- replica r{i} log ----\n{}", r.log_text());
            }
        }
    }
}

/// Waits until `log` says `needle` at least `n` times.
async fn wait_for_count(log: &std::path::Path, needle: &str, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while count_in_log(log, needle) < n {
        assert!(
            Instant::now() < deadline,
            "{} said {needle:?} fewer than {n} times in {timeout:?}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three replicas, replica `ri` connected to node `ni`, share the queue group
/// while clients connect through all three nodes. Mid-load replica r0 is
/// killed (SIGKILL), then node n1 (SIGKILL), taking replica r1's connection
/// with it; r1 fails over to a surviving node.
///
/// What a kill can cost, and what is asserted:
/// - Requests a replica had taken die with it (nats-server does not resend a
///   callout request), and so do requests on their way through a killed
///   node's routes. Each is one valid client refused by nats-server's auth
///   timeout ("lost"). Every lost connect must have been in flight at one of
///   the two kills (started before it, or within 500 ms after it: the time
///   the survivors take to notice a dead connection, which on loopback is
///   all but immediate), there can be at most one per client per kill, and
///   the client's next attempt is admitted.
/// - Clients of n1 lose their server, not an answer: their attempts end with
///   a connection error ("unreachable") and they move to the next node. Only
///   attempts on n1 may be unreachable, and only from the moment it dies.
/// - Outside those moments, every connect is answered, through any node:
///   zero unanswered connects. No connect of any client hangs beyond the
///   auth timeout, every client is admitted again by the end, and all three
///   replicas (r1 after its failover) answered requests.
/// - No answer is wrong: the service never refused a valid token (each of
///   its refusals names the bad clients' wrong audience), and no client with
///   a bad token was ever admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_across_a_three_node_cluster_answer_every_connect_while_a_replica_and_a_server_die(
) {
    let _alone = HEAVY.lock().await;
    let began = Instant::now();
    let issuer = DevIssuer::start(0).await.unwrap();
    let keys = CalloutKeys::new();
    let xkey_public = keys.xkey.public_key();
    let mut cluster = NatsCluster::start(&keys.issuer.public_key(), Some(&xkey_public)).await;
    // One replica per node, each configured with its node's URL only: a
    // list would be shuffled by the client library, and the test needs to
    // know which node holds which replica. Failover uses the other nodes'
    // URLs the cluster advertises to clients.
    let mut replicas = Replicas(Vec::new());
    for node in 0..NODES {
        let opts = ServiceOptions {
            xkey: true,
            ..Default::default()
        };
        replicas
            .0
            .push(CalloutService::start(&cluster.url(node), &issuer.issuer(), &keys, opts).await);
    }

    // Every node answers before the load starts (routes and the replicas'
    // queue subscriptions have spread through the cluster).
    let probe = issuer.token("probe", AUDIENCE, &["reader"], 300);
    for node in 0..NODES {
        let deadline = Instant::now() + Duration::from_secs(15);
        while let Err(e) = connect(&cluster.url(node), &probe).await {
            assert!(Instant::now() < deadline, "n{node} never admitted: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    const VALID: usize = 12;
    const BAD: usize = NODES;
    let tokens: Vec<(String, bool)> = (0..VALID)
        .map(|i| {
            let token = issuer.token(&format!("scale{i}"), AUDIENCE, &["reader"], 300);
            (token, true)
        })
        .chain((0..BAD).map(|i| {
            let token = issuer.token(&format!("mallory{i}"), "not-nats", &["admin"], 300);
            (token, false)
        }))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load_started = Instant::now();
    let load = start_load(cluster.urls(), tokens, stop.clone());

    tokio::time::sleep(Duration::from_millis(2000)).await;
    let replica_killed = Instant::now();
    replicas.0[0].kill();
    // The refusals this kill may cause take nats-server's 2 s timeout to
    // come; let them settle before the next fault.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let server_killed = Instant::now();
    cluster.kill(1);
    assert!(!cluster.is_up(1));
    wait_for_count(
        &replicas.0[1].log,
        "connected to NATS",
        2,
        Duration::from_secs(10),
    )
    .await;
    let r1_back = Instant::now();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, Ordering::SeqCst);
    let load_stopped = Instant::now();
    let attempts = join_all(load).await;

    const GRACE: Duration = Duration::from_millis(500);
    let valid: Vec<&Attempt> = attempts.iter().filter(|a| a.valid).collect();
    let bad: Vec<&Attempt> = attempts.iter().filter(|a| !a.valid).collect();
    let admitted = valid
        .iter()
        .filter(|a| a.outcome == Outcome::Admitted)
        .count();
    let lost: Vec<&&Attempt> = valid
        .iter()
        .filter(|a| a.outcome == Outcome::Refused)
        .collect();
    let lost_at_replica = lost
        .iter()
        .filter(|a| a.spans(replica_killed, GRACE))
        .count();
    let lost_at_server = lost
        .iter()
        .filter(|a| a.spans(server_killed, GRACE))
        .count();
    let unreachable: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.outcome == Outcome::Unreachable)
        .collect();
    let unanswered: Vec<&&&Attempt> = lost
        .iter()
        .filter(|a| !a.spans(replica_killed, GRACE) && !a.spans(server_killed, GRACE))
        .collect();
    let answered_by: Vec<usize> = replicas
        .0
        .iter()
        .map(|r| count_in_log(&r.log, "result=\"allowed\""))
        .collect();
    let r1_after_failover = {
        let lines = log_lines(&replicas.0[1].log);
        let reconnected = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains("connected to NATS"))
            .nth(1)
            .map(|(i, _)| i)
            .unwrap();
        lines[reconnected..]
            .iter()
            .filter(|l| l.contains("result=\"allowed\""))
            .count()
    };
    // Where each lost connect started relative to the kill it spans, and
    // on which node.
    let lost_detail: Vec<String> = lost
        .iter()
        .map(|a| {
            let (kill, at) = if a.spans(replica_killed, GRACE) {
                ("r0", replica_killed)
            } else {
                ("n1", server_killed)
            };
            let offset = a.started.saturating_duration_since(at).as_millis() as i128
                - at.saturating_duration_since(a.started).as_millis() as i128;
            format!("n{} {offset:+}ms of {kill}, took {:?}", a.node, a.took)
        })
        .collect();
    let mut unreachable_errors: Vec<&str> = unreachable
        .iter()
        .filter_map(|a| a.error.as_deref())
        .collect();
    unreachable_errors.sort_unstable();
    unreachable_errors.dedup();
    eprintln!(
        "{} connects by {VALID} valid clients over {:?} through 3 nodes: {admitted} admitted, \
         {} lost to nats-server's timeout ({lost_at_replica} in flight when r0 was killed, \
         {lost_at_server} when n1 was killed: {lost_detail:?}), {} unreachable \
         (n1's clients when it died: {unreachable_errors:?}), {} unanswered outside the kills",
        valid.len(),
        load_stopped - load_started,
        lost.len(),
        unreachable.len(),
        unanswered.len(),
    );
    eprintln!(
        "{} connects with a bad token, none admitted; replicas answered {answered_by:?} \
         (r1 {r1_after_failover} after failing over {:?} after n1 died); whole test {:?}",
        bad.len(),
        r1_back - server_killed,
        began.elapsed()
    );

    // The load ran through both kills: admitted connects before the first,
    // between them and after the second (a count would measure the machine).
    for (from, to, phase) in [
        (load_started, replica_killed, "before the replica died"),
        (replica_killed, server_killed, "between the kills"),
        (server_killed, load_stopped, "after the server died"),
    ] {
        assert!(
            valid
                .iter()
                .any(|a| a.outcome == Outcome::Admitted && a.started >= from && a.started < to),
            "no connect admitted {phase}"
        );
    }
    // Zero unanswered connects: every refusal of a valid client is a request
    // a kill took with it.
    assert!(
        unanswered.is_empty(),
        "valid connects refused away from the kills: {unanswered:?}"
    );
    // A client has one connect in flight at a time: at most one lost per
    // client per kill.
    for kill in [replica_killed, server_killed] {
        let mut workers: Vec<usize> = lost
            .iter()
            .filter(|a| a.spans(kill, GRACE))
            .map(|a| a.worker)
            .collect();
        let n = workers.len();
        workers.sort_unstable();
        workers.dedup();
        assert_eq!(
            workers.len(),
            n,
            "a client lost two connects to one kill: {lost:?}"
        );
    }
    for a in &lost {
        let next = valid
            .iter()
            .find(|b| b.worker == a.worker && b.started > a.started)
            .unwrap_or_else(|| panic!("no attempt after a lost one: {a:?}"));
        assert_eq!(
            next.outcome,
            Outcome::Admitted,
            "the retry after a lost connect was not admitted: {a:?} then {next:?}"
        );
    }
    for a in &unreachable {
        assert!(
            a.node == 1 && a.ended() >= server_killed,
            "a node that stayed up was unreachable: {a:?}"
        );
    }
    // No client was left without an answer: every attempt ended with one
    // (admitted, refused, unreachable), none with its own connect timeout.
    assert!(
        attempts
            .iter()
            .all(|a| !a.error.as_deref().is_some_and(|e| e.contains("timed out"))),
        "a connect hung until the client gave up"
    );
    // Every client is admitted again by the end, through a surviving node.
    let settled = r1_back + Duration::from_secs(1);
    for w in 0..VALID {
        let late: Vec<&&Attempt> = valid
            .iter()
            .filter(|a| a.worker == w && a.started > settled)
            .collect();
        assert!(!late.is_empty(), "client {w} made no attempt at the end");
        assert!(
            late.iter()
                .all(|a| a.outcome == Outcome::Admitted && a.node != 1),
            "client {w} was not admitted at the end: {late:?}"
        );
    }

    // No wrong answer.
    assert!(
        bad.iter().all(|a| a.outcome != Outcome::Admitted),
        "a bad token was admitted"
    );
    for (i, r) in replicas.0.iter().enumerate() {
        for line in log_lines(&r.log) {
            if line.contains("result=\"refused\"") {
                assert!(
                    line.contains("code=\"token_audience\""),
                    "r{i} refused a valid token: {line}"
                );
            }
        }
    }
    assert!(
        bad.iter()
            .any(|a| a.outcome == Outcome::Refused && a.took < Duration::from_secs(1)),
        "no bad token was refused by the service itself"
    );

    assert!(
        answered_by.iter().all(|&n| n > 0),
        "a replica answered nothing: {answered_by:?}"
    );
    assert!(
        r1_after_failover > 0,
        "r1 answered nothing after failing over"
    );
}
