//! tls-load: TLS resumption load against a loopback httpd (bench/run.py,
//! part 2 of issue 4).
//!
//! K virtual clients, one thread each, for a fixed time: each makes a full
//! handshake, keeps the session, and then resumes it on every following
//! connection (keeping the newest session the server gave: TLS 1.3 issues a
//! new one on each resumption). One `GET /index.html` per connection
//! (`Connection: close`), read to the end, so the server does the whole
//! connection's work. A resumption the server refused is a full handshake
//! and its session is kept instead.
//!
//! Output (`--json`): connections, handshakes/s, full and resumed counts,
//! the share of resumption attempts that resumed, handshake latency (TCP
//! connect + TLS handshake) p50/p99 for full and resumed handshakes and
//! p50/p99/max over both, errors.
//!
//! Cross-host mode (`--resume-port`, bench/farm.py): the K clients make
//! `--sessions N` full handshakes on `--host:--port` (host A), wait
//! `--pause-ms` (A forwards its stores to the farm), then resume every one
//! of the N sessions once on `--resume-host:--resume-port` (host B: a local
//! miss there, so a second-tier hit or a full handshake), then once more
//! with the newest session B gave (now a local hit on B). Each of the two
//! rounds reports how many of the N resumed, resumed/s over the round's
//! wall time, and handshake p50/p99/max (resumed ones, and all).
//!
//! Usage: tls-load --port P [--host 127.0.0.1] [--tls 1.2|1.3] [--clients K]
//!                 [--seconds S] [--io-timeout S] [--json]
//!        tls-load --port P --resume-port P2 [--resume-host H2] [--sessions N]
//!                 [--pause-ms MS] [--host, --tls, --clients, --io-timeout, --json]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslSession, SslVerifyMode,
    SslVersion,
};

/// Default bound of every socket operation (`--io-timeout`).
const IO_TIMEOUT: Duration = Duration::from_secs(10);

struct Args {
    host: String,
    port: u16,
    tls: SslVersion,
    tls_name: &'static str,
    clients: usize,
    seconds: f64,
    io_timeout: Duration,
    /// Cross-host mode: where the sessions are resumed.
    resume: Option<(String, u16)>,
    sessions: usize,
    pause: Duration,
    /// Cross-host mode: each session offered to the resume host right
    /// after its connection to the first host ended (`--immediate`).
    immediate: bool,
    json: bool,
}

fn usage(msg: &str) -> String {
    format!(
        "{msg}\nusage: tls-load --port P [--host 127.0.0.1] [--tls 1.2|1.3] \
         [--clients K] [--seconds S] [--io-timeout S] [--json]\n       \
         tls-load --port P --resume-port P2 [--resume-host H2] [--sessions N] \
         [--pause-ms MS] [--immediate] [...]"
    )
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 0,
        tls: SslVersion::TLS1_2,
        tls_name: "1.2",
        clients: 16,
        seconds: 5.0,
        io_timeout: IO_TIMEOUT,
        resume: None,
        sessions: 200,
        pause: Duration::from_millis(300),
        immediate: false,
        json: false,
    };
    let mut resume_host: Option<String> = None;
    let mut resume_port: Option<u16> = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| usage(&format!("{name} needs a value")))
        };
        match flag.as_str() {
            "--host" => a.host = value("--host")?,
            "--port" => {
                a.port = value("--port")?
                    .parse()
                    .map_err(|e| usage(&format!("--port: {e}")))?
            }
            "--tls" => match value("--tls")?.as_str() {
                "1.2" => (a.tls, a.tls_name) = (SslVersion::TLS1_2, "1.2"),
                "1.3" => (a.tls, a.tls_name) = (SslVersion::TLS1_3, "1.3"),
                other => return Err(usage(&format!("--tls {other}: expected 1.2 or 1.3"))),
            },
            "--clients" => {
                a.clients = value("--clients")?
                    .parse()
                    .map_err(|e| usage(&format!("--clients: {e}")))?
            }
            "--seconds" => {
                a.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| usage(&format!("--seconds: {e}")))?
            }
            "--io-timeout" => {
                let secs: f64 = value("--io-timeout")?
                    .parse()
                    .map_err(|e| usage(&format!("--io-timeout: {e}")))?;
                if !(secs > 0.0 && secs <= 600.0) {
                    return Err(usage("0 < --io-timeout <= 600"));
                }
                a.io_timeout = Duration::from_secs_f64(secs);
            }
            "--resume-host" => resume_host = Some(value("--resume-host")?),
            "--resume-port" => {
                resume_port = Some(
                    value("--resume-port")?
                        .parse()
                        .map_err(|e| usage(&format!("--resume-port: {e}")))?,
                )
            }
            "--sessions" => {
                a.sessions = value("--sessions")?
                    .parse()
                    .map_err(|e| usage(&format!("--sessions: {e}")))?
            }
            "--pause-ms" => {
                a.pause = Duration::from_millis(
                    value("--pause-ms")?
                        .parse()
                        .map_err(|e| usage(&format!("--pause-ms: {e}")))?,
                )
            }
            "--json" => a.json = true,
            "--immediate" => a.immediate = true,
            "-h" | "--help" => return Err(usage("")),
            other => return Err(usage(&format!("unknown argument {other}"))),
        }
    }
    if a.port == 0 {
        return Err(usage("--port is required"));
    }
    if a.clients == 0 || !(a.seconds > 0.0 && a.seconds <= 600.0) {
        return Err(usage("--clients >= 1 and 0 < --seconds <= 600"));
    }
    match (resume_host, resume_port) {
        (host, Some(port)) => a.resume = Some((host.unwrap_or_else(|| a.host.clone()), port)),
        (Some(_), None) => return Err(usage("--resume-host needs --resume-port")),
        (None, None) => {}
    }
    if a.resume.is_some() && a.sessions == 0 {
        return Err(usage("--sessions >= 1"));
    }
    Ok(a)
}

fn client_context(version: SslVersion) -> Result<SslContext, String> {
    let mut b = SslContextBuilder::new(SslMethod::tls_client()).map_err(|e| e.to_string())?;
    b.set_verify(SslVerifyMode::NONE);
    b.set_min_proto_version(Some(version))
        .map_err(|e| e.to_string())?;
    b.set_max_proto_version(Some(version))
        .map_err(|e| e.to_string())?;
    // httpd may close without close_notify after `Connection: close`.
    b.set_options(SslOptions::IGNORE_UNEXPECTED_EOF);
    Ok(b.build())
}

/// One connection's outcome.
struct Conn {
    resumed: bool,
    handshake: Duration,
    session: SslSession,
}

fn connect(
    ctx: &SslContext,
    addr: SocketAddr,
    session: Option<&SslSession>,
    io_timeout: Duration,
) -> Result<Conn, String> {
    let start = Instant::now();
    let tcp = TcpStream::connect_timeout(&addr, io_timeout).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(io_timeout))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(io_timeout))
        .map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    let mut ssl = Ssl::new(ctx).map_err(|e| format!("SSL_new: {e}"))?;
    if let Some(s) = session {
        // SAFETY: the session comes from a connection made with this same
        // context (`ctx` is shared by every connection of this process).
        unsafe { ssl.set_session(s) }.map_err(|e| format!("set_session: {e}"))?;
    }
    let mut stream = ssl.connect(tcp).map_err(|e| format!("handshake: {e}"))?;
    let handshake = start.elapsed();
    let resumed = stream.ssl().session_reused();
    stream
        .write_all(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::with_capacity(512);
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("read: {e}"))?;
    if !raw.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "response: {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(40)])
        ));
    }
    // After reading: TLS 1.3 sessions arrive after the handshake.
    let session = stream
        .ssl()
        .session()
        .ok_or("no session after the response")?
        .to_owned();
    // Send close_notify: OpenSSL marks the session of a connection freed
    // without it as not resumable (ssl_clear_bad_session).
    let _ = stream.shutdown();
    Ok(Conn {
        resumed,
        handshake,
        session,
    })
}

#[derive(Default)]
struct Tally {
    full: Vec<Duration>,
    resumed: Vec<Duration>,
    attempts: u64,
    errors: u64,
    first_error: Option<String>,
}

fn virtual_client(
    ctx: Arc<SslContext>,
    addr: SocketAddr,
    io_timeout: Duration,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut t = Tally::default();
    let mut session: Option<SslSession> = None;
    while !stop.load(Ordering::Relaxed) {
        let attempt = session.is_some();
        match connect(&ctx, addr, session.as_ref(), io_timeout) {
            Ok(c) => {
                if attempt {
                    t.attempts += 1;
                }
                if c.resumed {
                    t.resumed.push(c.handshake);
                } else {
                    t.full.push(c.handshake);
                }
                session = Some(c.session);
            }
            Err(e) => {
                t.errors += 1;
                t.first_error.get_or_insert(e);
                session = None;
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    t
}

fn pct(v: &mut [Duration], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    v[i].as_secs_f64() * 1e3
}

fn json_num(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.4}")
    } else {
        "null".into()
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for ch in s.chars() {
        match ch {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let addr: SocketAddr = match format!("{}:{}", args.host, args.port).parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("address: {e}");
            return ExitCode::from(2);
        }
    };
    let ctx = match client_context(args.tls) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("client context: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some((host, port)) = &args.resume {
        let resume: SocketAddr = match format!("{host}:{port}").parse() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("resume address: {e}");
                return ExitCode::from(2);
            }
        };
        if args.immediate {
            return immediate(&args, ctx, addr, resume);
        }
        return cross_host(&args, ctx, addr, resume);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let io_timeout = args.io_timeout;
    let workers: Vec<_> = (0..args.clients)
        .map(|_| {
            let (ctx, stop) = (Arc::clone(&ctx), Arc::clone(&stop));
            thread::spawn(move || virtual_client(ctx, addr, io_timeout, stop))
        })
        .collect();
    thread::sleep(Duration::from_secs_f64(args.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for w in workers {
        match w.join() {
            Ok(t) => {
                all.full.extend(t.full);
                all.resumed.extend(t.resumed);
                all.attempts += t.attempts;
                all.errors += t.errors;
                if all.first_error.is_none() {
                    all.first_error = t.first_error;
                }
            }
            Err(_) => {
                all.errors += 1;
                all.first_error
                    .get_or_insert("client thread panicked".into());
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (full, resumed) = (all.full.len() as f64, all.resumed.len() as f64);
    let mut every: Vec<Duration> = all.full.iter().chain(&all.resumed).copied().collect();
    let share = if all.attempts > 0 {
        resumed / all.attempts as f64
    } else {
        f64::NAN
    };
    let fields = [
        ("tls", json_str(args.tls_name)),
        ("clients", args.clients.to_string()),
        ("seconds", json_num(elapsed)),
        ("connections", (full + resumed).to_string()),
        ("handshakes_s", json_num((full + resumed) / elapsed)),
        ("full", full.to_string()),
        ("resumed", resumed.to_string()),
        ("attempts", all.attempts.to_string()),
        ("resumption_share", json_num(share)),
        ("resumed_s", json_num(resumed / elapsed)),
        ("full_p50_ms", json_num(pct(&mut all.full, 0.50))),
        ("full_p99_ms", json_num(pct(&mut all.full, 0.99))),
        ("resumed_p50_ms", json_num(pct(&mut all.resumed, 0.50))),
        ("resumed_p99_ms", json_num(pct(&mut all.resumed, 0.99))),
        ("p50_ms", json_num(pct(&mut every, 0.50))),
        ("p99_ms", json_num(pct(&mut every, 0.99))),
        ("max_ms", json_num(pct(&mut every, 1.0))),
        ("errors", all.errors.to_string()),
        (
            "first_error",
            all.first_error.as_deref().map_or("null".into(), json_str),
        ),
    ];
    print_fields(&fields, args.json);
    if full + resumed == 0.0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn print_fields<K: AsRef<str>>(fields: &[(K, String)], json: bool) {
    if json {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("\"{}\":{v}", k.as_ref()))
            .collect();
        println!("{{{}}}", body.join(","));
    } else {
        for (k, v) in fields {
            println!("{:18} {v}", k.as_ref());
        }
    }
}

/// One round of the cross-host mode: the outcome of each of the N slots.
struct Round {
    resumed: usize,
    done: usize,
    errors: usize,
    first_error: Option<String>,
    resumed_lat: Vec<Duration>,
    full_lat: Vec<Duration>,
    wall: Duration,
}

/// Run `op` over slots 0..n with k threads (each takes the next free slot);
/// `op` returns the connection or an error, and the round tallies them.
fn round<F>(k: usize, n: usize, op: F) -> Round
where
    F: Fn(usize) -> Result<Conn, String> + Sync,
{
    let next = AtomicUsize::new(0);
    let tally = Mutex::new(Round {
        resumed: 0,
        done: 0,
        errors: 0,
        first_error: None,
        resumed_lat: Vec::with_capacity(n),
        full_lat: Vec::with_capacity(n),
        wall: Duration::ZERO,
    });
    let start = Instant::now();
    thread::scope(|s| {
        for _ in 0..k.min(n) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let r = op(i);
                // A poisoned lock means another worker panicked: that
                // panic is reported by the scope; keep counting.
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                match r {
                    Ok(c) => {
                        t.done += 1;
                        if c.resumed {
                            t.resumed += 1;
                            t.resumed_lat.push(c.handshake);
                        } else {
                            t.full_lat.push(c.handshake);
                        }
                    }
                    Err(e) => {
                        t.errors += 1;
                        t.first_error.get_or_insert(e);
                    }
                }
            });
        }
    });
    let mut t = tally.into_inner().unwrap_or_else(|p| p.into_inner());
    t.wall = start.elapsed();
    t
}

/// Immediate mode (`--immediate`): for each of N slots, a full handshake
/// on `made`, then at once the same session offered to `resume`: whether a
/// store on one host is visible on another as soon as the handshake that
/// made it ended (a browser behind a round-robin balancer opens its next
/// connections that way). Reports the share resumed, the gap between the
/// end of the first connection and the start of the second (an upper bound
/// of store-to-visible for each resumed one) and the second handshake's
/// latency.
fn immediate(args: &Args, ctx: Arc<SslContext>, made: SocketAddr, resume: SocketAddr) -> ExitCode {
    let n = args.sessions;
    let io = args.io_timeout;
    let gaps = Mutex::new(Vec::with_capacity(n));
    let r = round(args.clients, n, |_| {
        let a = connect(&ctx, made, None, io)?;
        let b = connect(&ctx, resume, Some(&a.session), io)?;
        // From the end of A's connection to the end of B's handshake
        // (`connect` times the handshake from its own start, which follows
        // A's end at once): B looked the session up within this span.
        gaps.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(b.handshake);
        Ok(b)
    });
    let mut gaps = gaps.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut r = r;
    let fields: Vec<(String, String)> = vec![
        ("tls".into(), json_str(args.tls_name)),
        ("clients".into(), args.clients.to_string()),
        ("sessions".into(), n.to_string()),
        ("immediate_resumed".into(), r.resumed.to_string()),
        ("immediate_full".into(), r.full_lat.len().to_string()),
        ("immediate_errors".into(), r.errors.to_string()),
        ("gap_p50_ms".into(), json_num(pct(&mut gaps, 0.50))),
        ("gap_p99_ms".into(), json_num(pct(&mut gaps, 0.99))),
        ("resumed_p50_ms".into(), json_num(pct(&mut r.resumed_lat, 0.50))),
        ("resumed_p99_ms".into(), json_num(pct(&mut r.resumed_lat, 0.99))),
        ("resumed_max_ms".into(), json_num(pct(&mut r.resumed_lat, 1.0))),
        (
            "first_error".into(),
            r.first_error.as_deref().map_or("null".into(), json_str),
        ),
    ];
    print_fields(&fields, args.json);
    if r.done == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Cross-host mode: N sessions made on `made`, each resumed once on
/// `resume` (second-tier hit), then once more there (local hit).
fn cross_host(args: &Args, ctx: Arc<SslContext>, made: SocketAddr, resume: SocketAddr) -> ExitCode {
    let n = args.sessions;
    let io = args.io_timeout;
    let slots: Vec<Mutex<Option<SslSession>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let take = |i: usize| slots[i].lock().unwrap_or_else(|p| p.into_inner()).take();
    let keep = |i: usize, c: &Conn| {
        *slots[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(c.session.clone());
    };
    let full = round(args.clients, n, |i| {
        let c = connect(&ctx, made, None, io)?;
        keep(i, &c);
        Ok(c)
    });
    thread::sleep(args.pause);
    let mut rounds = Vec::with_capacity(2);
    for _ in 0..2 {
        rounds.push(round(args.clients, n, |i| {
            let s = take(i).ok_or("no session (its earlier connection failed)")?;
            let c = connect(&ctx, resume, Some(&s), io)?;
            keep(i, &c);
            Ok(c)
        }));
    }
    let mut fields: Vec<(String, String)> = vec![
        ("tls".into(), json_str(args.tls_name)),
        ("clients".into(), args.clients.to_string()),
        ("sessions".into(), n.to_string()),
        ("made".into(), full.done.to_string()),
        ("made_errors".into(), full.errors.to_string()),
        ("made_s".into(), json_num(full.done as f64 / full.wall.as_secs_f64())),
    ];
    let mut first_error = full.first_error.clone();
    for (name, mut r) in ["first", "second"].into_iter().zip(rounds) {
        let wall = r.wall.as_secs_f64();
        let tag = |f: &str| format!("{name}_{f}");
        let mut every: Vec<Duration> = r.full_lat.iter().chain(&r.resumed_lat).copied().collect();
        fields.extend([
            (tag("resumed"), r.resumed.to_string()),
            (tag("full"), r.full_lat.len().to_string()),
            (tag("errors"), r.errors.to_string()),
            (tag("seconds"), json_num(wall)),
            (tag("resumed_s"), json_num(r.resumed as f64 / wall)),
            (tag("resumed_p50_ms"), json_num(pct(&mut r.resumed_lat, 0.50))),
            (tag("resumed_p99_ms"), json_num(pct(&mut r.resumed_lat, 0.99))),
            (tag("resumed_max_ms"), json_num(pct(&mut r.resumed_lat, 1.0))),
            (tag("full_p50_ms"), json_num(pct(&mut r.full_lat, 0.50))),
            (tag("full_p99_ms"), json_num(pct(&mut r.full_lat, 0.99))),
            (tag("p50_ms"), json_num(pct(&mut every, 0.50))),
            (tag("p99_ms"), json_num(pct(&mut every, 0.99))),
            (tag("max_ms"), json_num(pct(&mut every, 1.0))),
        ]);
        if first_error.is_none() {
            first_error = r.first_error.take();
        }
    }
    fields.push((
        "first_error".into(),
        first_error.as_deref().map_or("null".into(), json_str),
    ));
    print_fields(&fields, args.json);
    if full.done == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
