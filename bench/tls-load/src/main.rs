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
//! connect + TLS handshake) p50/p99 for full and resumed handshakes, errors.
//!
//! Usage: tls-load --port P [--host 127.0.0.1] [--tls 1.2|1.3] [--clients K]
//!                 [--seconds S] [--json]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use openssl::ssl::{
    Ssl, SslContext, SslContextBuilder, SslMethod, SslOptions, SslSession, SslVerifyMode,
    SslVersion,
};

/// Bound of every socket operation.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

struct Args {
    host: String,
    port: u16,
    tls: SslVersion,
    tls_name: &'static str,
    clients: usize,
    seconds: f64,
    json: bool,
}

fn usage(msg: &str) -> String {
    format!(
        "{msg}\nusage: tls-load --port P [--host 127.0.0.1] [--tls 1.2|1.3] \
         [--clients K] [--seconds S] [--json]"
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
        json: false,
    };
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
            "--json" => a.json = true,
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
) -> Result<Conn, String> {
    let start = Instant::now();
    let tcp = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(IO_TIMEOUT))
        .map_err(|e| e.to_string())?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))
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

fn virtual_client(ctx: Arc<SslContext>, addr: SocketAddr, stop: Arc<AtomicBool>) -> Tally {
    let mut t = Tally::default();
    let mut session: Option<SslSession> = None;
    while !stop.load(Ordering::Relaxed) {
        let attempt = session.is_some();
        match connect(&ctx, addr, session.as_ref()) {
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
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|_| {
            let (ctx, stop) = (Arc::clone(&ctx), Arc::clone(&stop));
            thread::spawn(move || virtual_client(ctx, addr, stop))
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
        ("errors", all.errors.to_string()),
        (
            "first_error",
            all.first_error.as_deref().map_or("null".into(), json_str),
        ),
    ];
    if args.json {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!("{{{}}}", body.join(","));
    } else {
        for (k, v) in fields {
            println!("{k:18} {v}");
        }
    }
    if full + resumed == 0.0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
