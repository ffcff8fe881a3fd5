//! The test kit on its own, against the real servers: what the farm's and
//! the httpd tests rely on — commands and their counts, error replies kept
//! as values, the faults (SIGSTOP: no answer; SIGCONT: answers; SIGKILL:
//! refused; restart: answers on the same port, empty), TLS with the kit's
//! CA, a cluster whose keys spread over every node, sentinels that name
//! the master, memcached's figures, distinct ports and bounded runs.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use openssl::ssl::{SslConnector, SslMethod};
use testkit::{free_port, run_captured, Memcached, RedisCluster, RedisServer, Resp, Sentinel};

#[test]
fn a_redis_server_answers_and_its_faults_are_real() {
    let mut redis = RedisServer::start();
    redis.set("k", b"v\x00\xff");
    assert_eq!(redis.get("k").as_deref(), Some(&b"v\x00\xff"[..]));
    assert_eq!(redis.get("missing"), None);
    assert_eq!(redis.keys(), vec!["k".to_string()]);
    let stats = redis.commandstats();
    assert_eq!(stats.get("get"), Some(&2), "{stats:?}");
    assert_eq!(stats.get("set"), Some(&1), "{stats:?}");
    assert!(redis.cli(&["PING"]).contains("PONG"));
    match redis.command(&[b"NOSUCHCOMMAND"]) {
        Resp::Error(text) => assert!(text.starts_with("ERR"), "{text}"),
        other => panic!("an error reply, not {other:?}"),
    }

    redis.stop();
    let started = Instant::now();
    assert!(
        redis.try_command(&[b"PING"]).is_err(),
        "a stopped Redis answered"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "did not wait for an answer"
    );
    redis.cont();
    assert_eq!(redis.command(&[b"PING"]), Resp::Simple("PONG".into()));
    redis.kill();
    let err = redis
        .try_command(&[b"PING"])
        .expect_err("a killed Redis answered");
    assert!(err.contains("refused"), "{err}");
    let port = redis.port;
    redis.restart();
    assert_eq!(redis.port, port);
    assert_eq!(redis.command(&[b"PING"]), Resp::Simple("PONG".into()));
    assert!(redis.keys().is_empty(), "a restarted Redis is empty");
    let dir = redis.dir.path().to_path_buf();
    drop(redis);
    assert!(!dir.exists(), "its directory is removed");
}

#[test]
fn a_tls_redis_verifies_against_the_kits_ca() {
    let redis = RedisServer::start_tls();
    let mut b = SslConnector::builder(SslMethod::tls_client()).expect("connector");
    b.set_ca_file(redis.ca_file()).expect("CA file");
    let tcp = TcpStream::connect(("127.0.0.1", redis.tls_port.expect("TLS port"))).expect("TCP");
    let tls = b.build().connect("127.0.0.1", tcp);
    assert!(tls.is_ok(), "the certificate verifies: {:?}", tls.err());
    assert!(redis.tls_url().starts_with("rediss://127.0.0.1:"));
    // The plain port stays open for the kit's own commands.
    assert_eq!(redis.command(&[b"PING"]), Resp::Simple("PONG".into()));
}

#[test]
fn a_cluster_spreads_keys_over_every_node() {
    let mut cluster = RedisCluster::start(3);
    let mut nodes = BTreeSet::new();
    for i in 0..30 {
        let key = format!("socache-shm:k{i}");
        // Ask every node; the one owning the slot says OK, the others MOVED.
        let owner = cluster
            .nodes
            .iter()
            .position(|n| n.command(&[b"SET", key.as_bytes(), b"v"]) == Resp::Simple("OK".into()))
            .expect("a node owns the slot");
        nodes.insert(owner);
    }
    assert_eq!(nodes.len(), 3, "30 keys on {nodes:?} only");
    assert_eq!(cluster.keys().len(), 30);
    assert!(cluster.commandstats().get("set").copied().unwrap_or(0) >= 30);
    cluster.kill(0);
    assert!(cluster.keys().len() < 30);
}

#[test]
fn sentinels_name_the_master() {
    let master = RedisServer::start();
    let (sentinels, list) = Sentinel::three(master.port);
    assert_eq!(list.split(',').count(), 3);
    let named = testkit::resp_command(
        sentinels[0].port,
        &[b"SENTINEL", b"get-master-addr-by-name", b"m"],
    );
    let port = master.port.to_string();
    assert_eq!(
        named,
        Ok(Resp::Array(Some(vec![
            Resp::Bulk(Some(b"127.0.0.1".to_vec())),
            Resp::Bulk(Some(port.into_bytes())),
        ])))
    );
}

#[test]
fn memcached_counts_and_restarts_empty() {
    let mut m = Memcached::start();
    assert_eq!(m.stat("curr_items"), 0);
    let stored = {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", m.port)).expect("connect");
        s.write_all(b"set k 0 0 1\r\nv\r\n").expect("write");
        let mut buf = [0u8; 8];
        let n = s.read(&mut buf).expect("read");
        buf[..n].to_vec()
    };
    assert_eq!(stored, b"STORED\r\n");
    assert_eq!(m.stat("curr_items"), 1);
    assert!(String::from_utf8_lossy(&m.ask("get k")).contains("VALUE k 0 1"));
    m.restart();
    assert_eq!(m.stat("curr_items"), 0, "a restarted memcached is empty");
    m.kill();
    assert!(
        TcpStream::connect(("127.0.0.1", m.port)).is_err(),
        "refused"
    );
}

#[test]
fn ports_are_distinct_and_runs_are_bounded() {
    let ports: BTreeSet<u16> = (0..50).map(|_| free_port()).collect();
    assert_eq!(ports.len(), 50);
    assert!(ports.iter().all(|p| (20_000..32_768).contains(p)));

    let started = Instant::now();
    let run = run_captured(Command::new("sleep").arg("30"), Duration::from_millis(300));
    assert!(run.status.is_none(), "killed at its limit");
    assert!(started.elapsed() < Duration::from_secs(10));
    let run = run_captured(
        Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
        Duration::from_secs(20),
    );
    assert_eq!(run.status.and_then(|s| s.code()), Some(3));
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        ("out\n", "err\n")
    );
}
