//! The httpd harness itself (tests/common), before the tests that rely on
//! it: a start that fails says why, a port taken meanwhile is given up for
//! another, the ids and master keys the farm tests look for are the ones
//! httpd caches, and Redis keys are found by prefix and id only. (The
//! servers of the test kit have their own tests: testkit/tests/servers.rs.)

mod common;

use std::fs;

use common::FARM_PREFIX;
use common::{find_key, Client, Httpd, Mpm, Options, Prepared, Provider, SessionCache, Tls};

/// A configuration httpd refuses: the start fails fast with its message.
#[test]
fn harness_reports_startup_failure() {
    let started = std::panic::catch_unwind(|| {
        Httpd::start(Options::new(Provider::from_env(), Mpm::Prefork).extra("NoSuchDirective on"))
    });
    let err = started
        .err()
        .expect("httpd started with an invalid directive");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("Invalid command 'NoSuchDirective'"), "{msg}");
    // The failed instance's directory is kept for inspection; remove it.
    let kept = msg
        .split("instance kept in ")
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .expect("the message names the kept directory");
    fs::remove_dir_all(kept).expect("remove the kept instance directory");
}

/// A port taken between picking and starting: the harness moves to another.
#[test]
fn harness_retries_a_taken_port() {
    let prep = Prepared::new(Options::new(Provider::from_env(), Mpm::Prefork));
    let taken = prep.port;
    let _hold = std::net::TcpListener::bind(("127.0.0.1", taken)).expect("hold the port");
    let mut httpd = prep.start();
    assert_ne!(httpd.port(), taken);
    let c = httpd.connect(&Client::any(), None);
    assert_eq!(c.status, 200);
}

/// The farm tests look sessions up in Redis by the server's id (TLS 1.3:
/// the stateful ticket) and search values for master keys (TLS 1.3: the
/// resumption PSK). Checked here on a plain segment, without the farm: the
/// access log's `SSL_SESSION_ID` of a full handshake is the id the client
/// resumes by, and the cached value holds the client's master key.
#[test]
fn the_harness_knows_server_session_ids_and_master_keys() {
    let mut httpd = Httpd::start(
        Options::new(Provider::Shm, Mpm::Prefork)
            .cache(SessionCache::Raw("shm:{dir}/scache(1M)".into())),
    );
    for tls in [Tls::V12, Tls::V13] {
        let client = Client::new(tls);
        let first = httpd.connect(&client, None);
        assert!(
            first
                .log
                .session_id
                .eq_ignore_ascii_case(&first.session.server_id_hex()),
            "{}: the server logged id {} but the client holds {}",
            tls.log_name(),
            first.log.session_id,
            first.session.server_id_hex()
        );
        let again = httpd.connect(&client, Some(&first.session));
        assert!(
            again.both_resumed(),
            "status {} client resumed={} log: {}",
            again.status,
            again.resumed,
            again.log.line
        );
        let segment = fs::read(httpd.dir().join("scache")).expect("read segment");
        let key = first.session.master_key();
        assert!(
            segment.windows(key.len()).any(|w| w == key.as_slice()),
            "{}: the client's master key is not in the segment",
            tls.log_name()
        );
    }
}

/// Keys are looked up by the exact id the server caches, whatever else
/// Redis holds: a foreign key with the same id under another prefix is
/// never read (find_key's own check, used by every farm test).
#[test]
fn find_key_matches_prefix_and_id_only() {
    let id = "00ff";
    let keys = vec![
        "other:mod_ssl-sess:00ff".to_string(),
        format!("{FARM_PREFIX}mod_ssl-sess:10ff"),
        format!("{FARM_PREFIX}mod_ssl-sess:00FF"),
    ];
    assert_eq!(find_key(&keys, FARM_PREFIX, id), Some(&keys[2]));
}
