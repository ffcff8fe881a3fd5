//! Session tickets sealed under keys kept in the segment (`tickets=`),
//! against the real Debian apache2 with `SSLSessionTickets on`, real TLS
//! clients holding stateless tickets, and a real redis-server for the farm.
//!
//! 1. TLS 1.2 and TLS 1.3 tickets resume across children (prefork, event).
//! 2. They resume across a graceful restart; with mod_ssl's own keys (no
//!    `tickets=`) none does (the control).
//! 3. A ticket issued by host A resumes on host B sharing one Redis.
//! 4. Rotation with a 2 s period: a ticket of the previous period resumes
//!    and comes back renewed under the new key; one older than N periods
//!    is a full handshake, never an error; its key is then absent from the
//!    segment's bytes.
//! 5. Redis down at a period boundary: each host makes its own key, says
//!    so once, and keeps serving and resuming its own tickets. Redis never
//!    holds a key in clear.
//! 6. Each bad configuration fails `apache2 -t` naming the problem.
//!
//! Every test prints its figures (`cargo test -- --nocapture`).

mod common;

use std::fs;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{
    new_farm_key, start_farm_host, Client, Conn, FarmArg, Httpd, Mpm, Options, Prepared, Provider,
    RedisServer, Session, SessionCache, Tls,
};

/// Tickets per run.
const TICKETS: usize = 100;
/// Of which at least this many must resume.
const RESUMED_AT_LEAST: usize = 99;

/// The id prefix of a ticket key in the segment (src/httpd/tickets.rs).
const KEY_ID_PREFIX: &[u8] = b"\0socache-shm:ticket-key:";

fn options(mpm: Mpm, tickets: &str) -> Options {
    let arg = if tickets.is_empty() {
        "shm:{dir}/scache(1M)".to_string()
    } else {
        format!("shm:{{dir}}/scache(1M) {tickets}")
    };
    Options::new(Provider::Shm, mpm)
        .session_tickets(true)
        .cache(SessionCache::Raw(arg))
}

fn describe(c: &Conn) -> String {
    format!(
        "status {} client resumed={} log: {}",
        c.status, c.resumed, c.log.line
    )
}

/// A session holding a ticket, and the process that issued it.
type Issued = (Session, u32);

/// `n` full handshakes: their sessions, each holding a ticket.
fn tickets(host: &mut Httpd, client: &Client, n: usize) -> Vec<Issued> {
    (0..n)
        .map(|_| {
            let c = host.connect(client, None);
            assert!(
                c.status == 200 && !c.log.resumed,
                "a new handshake: {}",
                describe(&c)
            );
            assert!(
                c.session.ticket().is_some(),
                "no ticket with SSLSessionTickets on"
            );
            (c.session, c.log.pid)
        })
        .collect()
}

/// Offer each session to `host`: (resumed, resumed by another process
/// than the one that issued it).
fn resume_all(host: &mut Httpd, client: &Client, sessions: &[Issued]) -> (usize, usize) {
    let (mut resumed, mut elsewhere) = (0, 0);
    let mut not = Vec::new();
    for (s, pid) in sessions {
        let c = host.connect(client, Some(s));
        assert_eq!(c.status, 200, "{}", describe(&c));
        if c.both_resumed() {
            resumed += 1;
            if c.log.pid != *pid {
                elsewhere += 1;
            }
        } else if not.len() < 3 {
            not.push(describe(&c));
        }
    }
    if resumed < sessions.len() {
        println!("  not resumed, e.g. {not:#?}");
    }
    (resumed, elsewhere)
}

/// [`TICKETS`] tickets issued by `issuer` over `tls`, each then offered to
/// `to` (`issuer` itself when `None`): as [`resume_all`].
fn issue_and_resume(issuer: &mut Httpd, to: Option<&mut Httpd>, tls: Tls) -> (usize, usize) {
    let client = Client::new(tls);
    let sessions = tickets(issuer, &client, TICKETS);
    resume_all(to.unwrap_or(issuer), &client, &sessions)
}

/// The period a ticket's key name says (its first 8 bytes).
fn period_of(ticket: &[u8]) -> u64 {
    u64::from_be_bytes(ticket[..8].try_into().expect("8 bytes"))
}

fn now_secs_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Sleep until `offset` seconds into the next period of `period` seconds;
/// the period we are then in.
fn sleep_into_next_period(period: f64, offset: f64) -> u64 {
    let now = now_secs_f64();
    let next = ((now / period).floor() + 1.0) * period + offset;
    thread::sleep(Duration::from_secs_f64(next - now));
    (now_secs_f64() / period).floor() as u64
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// 1. Across children.
// ---------------------------------------------------------------------------

fn across_children(mpm: Mpm) {
    let mut httpd = Httpd::start(options(mpm, "tickets=1h"));
    for tls in [Tls::V12, Tls::V13] {
        let (resumed, elsewhere) = issue_and_resume(&mut httpd, None, tls);
        println!(
            "{} {}: {resumed} of {TICKETS} tickets resumed ({elsewhere} by another process than the issuer)",
            mpm.name(),
            tls.log_name()
        );
        assert!(resumed >= RESUMED_AT_LEAST, "{resumed} of {TICKETS}");
        assert!(elsewhere > 0, "no ticket was resumed by another process");
    }
    let figures = ticket_figures(&mut httpd);
    println!("  {figures:?}");
    assert!(figure(&figures, "TicketKeysHeld") >= 1);
    // One ticket per TLS 1.2 full handshake, two per TLS 1.3 one (OpenSSL's
    // default), counted by every child in one place.
    assert!(figure(&figures, "TicketsIssued") >= 3 * TICKETS as u64);
    assert!(figure(&figures, "TicketsOpenedNewestKey") >= 2 * RESUMED_AT_LEAST as u64);
}

/// The `Ticket*` lines of server-status?auto.
fn ticket_figures(host: &mut Httpd) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = host
        .status_auto()
        .into_iter()
        .filter(|(k, _)| k.starts_with("Ticket"))
        .map(|(k, v)| (k, v.parse().unwrap_or(0)))
        .collect();
    out.sort();
    out
}

fn figure(figures: &[(String, u64)], key: &str) -> u64 {
    figures
        .iter()
        .find(|(k, _)| k == key)
        .map(|&(_, v)| v)
        .unwrap_or_else(|| panic!("no {key} in {figures:?}"))
}

common::test_cases!(across_children {
    tickets_resume_across_children_prefork(Mpm::Prefork);
    tickets_resume_across_children_event(Mpm::Event);
});

// ---------------------------------------------------------------------------
// 2. Across a graceful restart, and the control.
// ---------------------------------------------------------------------------

fn across_graceful(tickets_opt: &str) -> Vec<(Tls, usize)> {
    let mut httpd = Httpd::start(options(Mpm::Prefork, tickets_opt));
    let made: Vec<(Tls, Client, Vec<Issued>)> = [Tls::V12, Tls::V13]
        .into_iter()
        .map(|tls| {
            let client = Client::new(tls);
            let s = tickets(&mut httpd, &client, TICKETS);
            (tls, client, s)
        })
        .collect();
    httpd.graceful();
    made.into_iter()
        .map(|(tls, client, sessions)| {
            let (resumed, _) = resume_all(&mut httpd, &client, &sessions);
            (tls, resumed)
        })
        .collect()
}

#[test]
fn tickets_resume_across_a_graceful_restart() {
    for (tls, resumed) in across_graceful("tickets=1h") {
        println!(
            "tickets=1h, {}: {resumed} of {TICKETS} tickets resumed after a graceful restart",
            tls.log_name()
        );
        assert!(resumed >= RESUMED_AT_LEAST, "{resumed} of {TICKETS}");
    }
}

#[test]
fn control_mod_ssl_keys_do_not_survive_a_graceful_restart() {
    for (tls, resumed) in across_graceful("") {
        println!(
            "mod_ssl's own keys, {}: {resumed} of {TICKETS} tickets resumed after a graceful restart",
            tls.log_name()
        );
        assert_eq!(resumed, 0);
    }
}

// ---------------------------------------------------------------------------
// 3. Across hosts, through Redis.
// ---------------------------------------------------------------------------

#[test]
fn tickets_from_host_a_resume_on_host_b() {
    let redis = RedisServer::start();
    let arg = FarmArg::redis(&redis.url()).set("tickets", "1h");
    let key = new_farm_key();
    let opts = || options(Mpm::Prefork, "").cache(arg.cache());
    let mut a = start_farm_host(opts(), &arg, Some(&key));
    let mut b = start_farm_host(opts(), &arg, Some(&key));
    for tls in [Tls::V12, Tls::V13] {
        let (resumed, _) = issue_and_resume(&mut a, Some(&mut b), tls);
        println!(
            "{}: {resumed} of {TICKETS} tickets issued by host A resumed on host B",
            tls.log_name()
        );
        assert!(resumed >= RESUMED_AT_LEAST, "{resumed} of {TICKETS}");
    }
    // Redis holds the agreed key sealed: neither its name nor its secrets
    // appear in any value or key name.
    let ticket = tickets(&mut a, &Client::new(Tls::V12), 1)[0]
        .0
        .ticket()
        .expect("a ticket");
    let name = &ticket[..16];
    let segment = fs::read(a.dir().join("scache")).expect("read A's segment");
    let at = find(&segment, name).expect("the key's name in A's segment");
    let secrets = &segment[at + 16..at + 80];
    let mut dump = Vec::new();
    for k in redis.keys() {
        dump.extend_from_slice(k.as_bytes());
        dump.extend(redis.get(&k).unwrap_or_default());
    }
    assert!(
        find(&dump, name).is_none(),
        "the key's name in clear in Redis"
    );
    assert!(
        find(&dump, &secrets[..32]).is_none(),
        "the AES key in clear in Redis"
    );
    assert!(
        find(&dump, &secrets[32..]).is_none(),
        "the HMAC key in clear in Redis"
    );
    let figures = ticket_figures(&mut b);
    println!("  host B: {figures:?}");
    assert!(figure(&figures, "TicketKeysAgreed") >= 1);
    assert_eq!(figure(&figures, "TicketKeysMadeAlone"), 0);
    println!(
        "Redis: {} keys, {} bytes; no ticket key name, AES or HMAC key in clear",
        redis.keys().len(),
        dump.len()
    );
}

// ---------------------------------------------------------------------------
// 4. Rotation.
// ---------------------------------------------------------------------------

#[test]
fn rotation_renews_previous_period_tickets_and_forgets_old_keys() {
    // tickets=2s ticket-keys=3: a key opens tickets for 4 s after its
    // period, so the ticket lifetime is 4 s.
    let mut httpd = Httpd::start(options(Mpm::Prefork, "tickets=2s").cache_timeout(4));
    let client = Client::new(Tls::V12);
    let client13 = Client::new(Tls::V13);
    let p0 = sleep_into_next_period(2.0, 0.2);
    let old = tickets(&mut httpd, &client, 1).remove(0).0;
    let old13 = tickets(&mut httpd, &client13, 1).remove(0).0;
    let old_ticket = old.ticket().expect("ticket");
    assert_eq!(
        period_of(&old_ticket),
        p0,
        "encrypted under its period's key"
    );
    let segment = httpd.dir().join("scache");
    let name = old_ticket[..16].to_vec();
    assert!(
        find(&fs::read(&segment).unwrap(), &name).is_some(),
        "the key is in the segment"
    );

    // Next period: the previous period's ticket resumes, renewed.
    let p1 = sleep_into_next_period(2.0, 0.2);
    let c = httpd.connect(&client, Some(&old));
    assert!(
        c.both_resumed(),
        "previous period's ticket: {}",
        describe(&c)
    );
    let renewed = c.session.ticket().expect("a ticket");
    assert_ne!(renewed, old_ticket, "the ticket was not renewed");
    assert_eq!(period_of(&renewed), p1, "renewed under the new key");
    let c13 = httpd.connect(&client13, Some(&old13));
    assert!(c13.both_resumed(), "TLS 1.3: {}", describe(&c13));
    println!(
        "rotation: ticket of period {p0} resumed in period {p1} (TLS 1.2 and 1.3), \
         renewed under period {}",
        period_of(&renewed)
    );

    // N = 3 periods after its own: the key is gone; offered anyway (time
    // refreshed so the client does offer it), a full handshake.
    let p3 = loop {
        let p = sleep_into_next_period(2.0, 0.2);
        if p >= p0 + 3 {
            break p;
        }
    };
    for (client, session, tls) in [(&client, &old, "TLS 1.2"), (&client13, &old13, "TLS 1.3")] {
        let c = httpd.connect(client, Some(&session.refreshed()));
        assert_eq!(c.status, 200, "{}", describe(&c));
        assert!(
            !c.resumed && !c.log.resumed,
            "a ticket of period {p0} in period {p3} resumed: {}",
            describe(&c)
        );
        println!("{tls}: ticket of period {p0} offered in period {p3}: full handshake, status 200");
    }

    let figures = ticket_figures(&mut httpd);
    println!("  {figures:?}");
    assert!(figure(&figures, "TicketsOpenedOlderKey") >= 2);
    assert!(figure(&figures, "TicketsNotOpened") >= 2);
    assert!(figure(&figures, "TicketKeysMade") >= 3);

    // Zeroed within ~11 s of its last period (the parent's sweep).
    let mut id = KEY_ID_PREFIX.to_vec();
    id.extend_from_slice(&p0.to_be_bytes());
    let started = std::time::Instant::now();
    loop {
        let bytes = fs::read(&segment).expect("read segment");
        let gone = find(&bytes, &name).is_none() && find(&bytes, &id).is_none();
        if gone {
            println!(
                "the key of period {p0} is absent from the segment's bytes {:.1} s after its last period",
                now_secs_f64() - ((p0 + 3) * 2) as f64
            );
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(25),
            "the key of period {p0} is still in the segment's bytes"
        );
        thread::sleep(Duration::from_millis(500));
    }
}

// ---------------------------------------------------------------------------
// 5. Redis down at the boundary.
// ---------------------------------------------------------------------------

#[test]
fn redis_down_at_the_boundary_each_host_keeps_its_own_tickets() {
    let mut redis = RedisServer::start();
    let arg = FarmArg::redis(&redis.url())
        .set("tickets", "2s")
        .set("timeout", "50ms");
    let key = new_farm_key();
    let opts = || {
        options(Mpm::Prefork, "")
            .cache(arg.cache())
            .cache_timeout(4)
    };
    let mut a = start_farm_host(opts(), &arg, Some(&key));
    let mut b = start_farm_host(opts(), &arg, Some(&key));
    let client = Client::new(Tls::V12);
    // Agreed while Redis is up.
    let s = tickets(&mut a, &client, 1).remove(0).0;
    assert!(b.connect(&client, Some(&s)).both_resumed());
    redis.kill();
    let p = sleep_into_next_period(2.0, 0.3);
    sleep_into_next_period(2.0, 0.3);
    for (host, label) in [(&mut a, "A"), (&mut b, "B")] {
        let sessions = tickets(host, &client, 20);
        assert!(sessions
            .iter()
            .all(|(s, _)| period_of(&s.ticket().unwrap()) > p));
        let (resumed, _) = resume_all(host, &client, &sessions);
        println!("Redis down: host {label}: {resumed} of 20 of its own tickets resumed");
        assert!(resumed >= 19, "{resumed} of 20");
        let log = host.error_log();
        let said = log
            .lines()
            .filter(|l| l.contains("the farm tier could not be asked"))
            .count();
        let figures = ticket_figures(host);
        println!("  host {label} said it made keys alone {said} time(s); {figures:?}");
        assert!(said >= 1, "host {label} did not say it made its own key");
        assert!(figure(&figures, "TicketKeysMadeAlone") >= 1);
    }
}

// ---------------------------------------------------------------------------
// 6. Bad configurations fail `apache2 -t`, naming the problem.
// ---------------------------------------------------------------------------

#[test]
fn bad_configurations_fail_the_config_test() {
    let cases: Vec<(Options, &str)> = vec![
        (
            options(Mpm::Prefork, "tickets=500ms"),
            "tickets=500ms is out of range",
        ),
        (
            options(Mpm::Prefork, "tickets=8d"),
            "tickets=8d is out of range",
        ),
        (
            options(Mpm::Prefork, "tickets=1h ticket-keys=1"),
            "ticket-keys=1 is not a number from 2 to 16",
        ),
        (
            options(Mpm::Prefork, "ticket-keys=3"),
            "ticket-keys= needs tickets=",
        ),
        (
            options(Mpm::Prefork, "tickets=1h")
                .extra("SSLStaplingCache \"shm:{dir}/staple(64K) tickets=1h\""),
            "not for SSLStaplingCache",
        ),
        (
            options(Mpm::Prefork, "tickets=1h")
                .extra("SSLSessionCache \"shm:{dir}/scache2(64K) tickets=1h\""),
            "tickets= is given on two caches",
        ),
        (
            options(Mpm::Prefork, "tickets=1h")
                .extra("SSLSessionTicketKeyFile \"{dir}/ticket.key\""),
            "SSLSessionTicketKeyFile",
        ),
        (
            options(Mpm::Prefork, "tickets=2s"),
            "gives tickets a lifetime of 300 s",
        ),
        (
            options(Mpm::Prefork, "tickets=1m ticket-keys=2").cache_timeout(120),
            "SSLSessionCacheTimeout 120",
        ),
    ];
    for (opts, want) in cases {
        let prep = Prepared::new(opts);
        fs::write(prep.dir.join("ticket.key"), [7u8; 48]).expect("ticket key file");
        let (ok, out) = prep.config_test();
        println!(
            "-t: {want:?}: {}",
            out.lines()
                .find(|l| l.contains(want))
                .unwrap_or("(missing)")
        );
        assert!(!ok, "accepted, expected {want:?}: {out}");
        assert!(out.contains(want), "{out:?} does not name {want:?}");
    }
    // And the good one passes.
    let (ok, out) = Prepared::new(options(Mpm::Prefork, "tickets=12h")).config_test();
    assert!(ok, "{out}");
}
