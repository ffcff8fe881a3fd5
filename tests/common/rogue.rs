//! Small misbehaving servers on loopback for the farm tier's fault tests
//! (tests/httpd_farm_faults.rs): what a stalled proxy, an overloaded or
//! hostile Redis, or a middlebox does to a client. Each [`Rogue`] is a std
//! `TcpListener` on a free loopback port with one thread per connection;
//! it counts connections, commands and bytes ([`RogueStats`]) and stops
//! (closing every connection within [`TICK`]) when dropped.
//!
//! - [`Misbehaviour::Silent`]: accepts and never sends a byte. To a
//!   `rediss://` client this is a TLS handshake that stalls; to `redis://`
//!   a Redis that never answers.
//! - [`Misbehaviour::Drip`]: a RESP server answering every command (`+OK`,
//!   `+PONG` to PING, a bulk value to GET) one byte at a time.
//! - [`Misbehaviour::Huge`]: `+OK` to everything but GET; every GET gets a
//!   well-formed bulk string of the given size, streamed from one shared
//!   buffer.
//! - [`Misbehaviour::Garbage`]: random bytes (not RESP) for every request.
//! - [`Misbehaviour::MovedToDead`]: a Redis Cluster node that answers every
//!   keyed command `-MOVED` to an address where nothing listens; its slot
//!   map (`CLUSTER SLOTS`) puts every slot on itself or on that address.

use super::*;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// How often a connection thread looks at the stop flag (its socket
/// timeouts), and the accept loop's poll interval.
pub(crate) const TICK: Duration = Duration::from_millis(50);

/// A write that makes no progress for this long ends the connection (the
/// client stopped reading and did not close).
const STALL: Duration = Duration::from_secs(5);

/// The chunk [`Misbehaviour::Huge`] streams its values from.
const CHUNK: usize = 1 << 20;

/// What a [`Rogue`] does with each connection.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Misbehaviour {
    /// Accept, read and discard whatever comes, never send a byte.
    Silent,
    /// Answer every command, one byte every `interval`: `+PONG` to PING, a
    /// bulk string of `value_len` bytes to GET, `+OK` to anything else
    /// (AUTH, SELECT, HELLO, CLIENT SETNAME, SET, ...).
    Drip {
        interval: Duration,
        value_len: usize,
    },
    /// `+OK` (`+PONG`) at once to anything but GET; every GET gets
    /// `$<len>\r\n`, `len` bytes and `\r\n`, written as fast as the client
    /// reads.
    Huge { len: usize },
    /// For every chunk of request bytes received: `len` random bytes.
    Garbage { len: usize },
    /// A cluster node: `CLUSTER SLOTS` maps slots 0-16383 to itself
    /// (`slots_on_self`) or to `127.0.0.1:<dead_port>`; GET, SET, DEL and
    /// every other keyed command get `-MOVED 0 127.0.0.1:<dead_port>`;
    /// PING `+PONG`, anything else `+OK`.
    MovedToDead { dead_port: u16, slots_on_self: bool },
}

/// What a [`Rogue`] saw and did, over all its connections.
#[derive(Default, Debug)]
pub(crate) struct RogueStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Commands parsed (RESP kinds only).
    pub commands: AtomicU64,
    /// GET commands among them.
    pub gets: AtomicU64,
    /// Bytes received from clients.
    pub bytes_received: AtomicU64,
    /// Bytes written to clients (accepted by the kernel).
    pub bytes_sent: AtomicU64,
    /// GET replies written to their last byte.
    pub complete_values: AtomicU64,
    /// The most bytes written of one GET reply.
    pub max_value_reply: AtomicU64,
    /// Commands by name (upper case; `CLUSTER SLOTS` with its subcommand).
    pub by_command: std::sync::Mutex<HashMap<String, u64>>,
}

impl RogueStats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// How many `name` commands came (`"GET"`, `"CLUSTER SLOTS"`).
    pub(crate) fn command_count(&self, name: &str) -> u64 {
        let map = self.by_command.lock().unwrap_or_else(|e| e.into_inner());
        map.get(name).copied().unwrap_or(0)
    }

    fn count_command(&self, args: &[Vec<u8>]) {
        let mut name = args
            .first()
            .map(|a| String::from_utf8_lossy(a).to_ascii_uppercase())
            .unwrap_or_default();
        if name == "CLUSTER" {
            if let Some(sub) = args.get(1) {
                name = format!(
                    "CLUSTER {}",
                    String::from_utf8_lossy(sub).to_ascii_uppercase()
                );
            }
        }
        let mut map = self.by_command.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(name).or_insert(0) += 1;
    }

    /// One line for a test's output.
    pub(crate) fn summary(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let by = {
            let map = self.by_command.lock().unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<_> = map.iter().map(|(k, n)| format!("{k} {n}")).collect();
            v.sort();
            v.join(", ")
        };
        format!(
            "connections {} (open {}), commands {} (GET {}; {by}), received {} B, sent {} B, \
             GET replies complete {}, largest GET reply sent {} B",
            g(&self.connections),
            g(&self.open),
            g(&self.commands),
            g(&self.gets),
            g(&self.bytes_received),
            g(&self.bytes_sent),
            g(&self.complete_values),
            g(&self.max_value_reply)
        )
    }
}

/// A misbehaving server on `127.0.0.1:port`; stops when dropped.
pub(crate) struct Rogue {
    pub port: u16,
    pub what: Misbehaviour,
    stats: Arc<RogueStats>,
    stop: Arc<AtomicBool>,
}

impl Rogue {
    /// Listen on a free loopback port and serve every connection with
    /// `what`, each in its own thread.
    pub(crate) fn start(what: Misbehaviour) -> Rogue {
        let (port, listener) = (0..20)
            .find_map(|_| {
                let port = free_port();
                TcpListener::bind((Ipv4Addr::LOCALHOST, port))
                    .ok()
                    .map(|l| (port, l))
            })
            .expect("bind a loopback port for a rogue server");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stats = Arc::new(RogueStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (stats.clone(), stop.clone());
        thread::Builder::new()
            .name(format!("rogue-{port}"))
            .spawn(move || accept_loop(listener, port, what, st, sp))
            .expect("spawn rogue accept thread");
        Rogue {
            port,
            what,
            stats,
            stop,
        }
    }

    /// `127.0.0.1:<port>`.
    pub(crate) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub(crate) fn stats(&self) -> &RogueStats {
        &self.stats
    }

    pub(crate) fn connections(&self) -> u64 {
        RogueStats::get(&self.stats.connections)
    }

    pub(crate) fn bytes_sent(&self) -> u64 {
        RogueStats::get(&self.stats.bytes_sent)
    }
}

impl Drop for Rogue {
    fn drop(&mut self) {
        // Every thread sees it within TICK and closes its socket.
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn accept_loop(
    listener: TcpListener,
    port: u16,
    what: Misbehaviour,
    stats: Arc<RogueStats>,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                RogueStats::add(&stats.connections, 1);
                RogueStats::add(&stats.open, 1);
                let (st, sp) = (stats.clone(), stop.clone());
                let spawned = thread::Builder::new()
                    .name("rogue-conn".into())
                    .spawn(move || {
                        serve(stream, port, what, &st, &sp);
                        st.open.fetch_sub(1, Ordering::Relaxed);
                    });
                if spawned.is_err() {
                    stats.open.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => thread::sleep(TICK / 10),
            Err(_) => thread::sleep(TICK),
        }
    }
}

/// Whether an I/O error is a socket timeout (try again).
fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn serve(mut s: TcpStream, port: u16, what: Misbehaviour, stats: &RogueStats, stop: &AtomicBool) {
    if s.set_nonblocking(false).is_err()
        || s.set_read_timeout(Some(TICK)).is_err()
        || s.set_write_timeout(Some(TICK)).is_err()
    {
        return;
    }
    let _ = s.set_nodelay(true);
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    while !stop.load(Ordering::Relaxed) {
        let n = match s.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if timed_out(&e) => continue,
            Err(_) => return,
        };
        RogueStats::add(&stats.bytes_received, n as u64);
        match what {
            Misbehaviour::Silent => {}
            Misbehaviour::Garbage { len } => {
                let mut junk = vec![0u8; len];
                openssl::rand::rand_bytes(&mut junk).expect("RAND_bytes");
                if !send(&mut s, &junk, stats, stop) {
                    return;
                }
            }
            Misbehaviour::Drip { .. }
            | Misbehaviour::Huge { .. }
            | Misbehaviour::MovedToDead { .. } => {
                pending.extend_from_slice(&chunk[..n]);
                loop {
                    match parse_command(&pending) {
                        Parsed::Incomplete => break,
                        Parsed::Invalid => return,
                        Parsed::Command(args, used) => {
                            pending.drain(..used);
                            RogueStats::add(&stats.commands, 1);
                            stats.count_command(&args);
                            if !answer(&mut s, port, what, &args, stats, stop) {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Answer one command as `what` says; false: the connection is over.
fn answer(
    s: &mut TcpStream,
    port: u16,
    what: Misbehaviour,
    args: &[Vec<u8>],
    stats: &RogueStats,
    stop: &AtomicBool,
) -> bool {
    let name = args
        .first()
        .map(|a| a.to_ascii_uppercase())
        .unwrap_or_default();
    let is_get = name == b"GET";
    if is_get {
        RogueStats::add(&stats.gets, 1);
    }
    let simple: &[u8] = if name == b"PING" {
        b"+PONG\r\n"
    } else {
        b"+OK\r\n"
    };
    match what {
        Misbehaviour::Drip {
            interval,
            value_len,
        } => {
            let reply = if is_get {
                let mut r = format!("${value_len}\r\n").into_bytes();
                r.extend(std::iter::repeat_n(b'v', value_len));
                r.extend_from_slice(b"\r\n");
                r
            } else {
                simple.to_vec()
            };
            let mut sent = 0u64;
            for byte in &reply {
                if !send(s, std::slice::from_ref(byte), stats, stop) {
                    if is_get {
                        stats.max_value_reply.fetch_max(sent, Ordering::Relaxed);
                    }
                    return false;
                }
                sent += 1;
                thread::sleep(interval);
            }
            if is_get {
                stats.max_value_reply.fetch_max(sent, Ordering::Relaxed);
                RogueStats::add(&stats.complete_values, 1);
            }
            true
        }
        Misbehaviour::Huge { len } => {
            if !is_get {
                return send(s, simple, stats, stop);
            }
            static BUF: OnceLock<Vec<u8>> = OnceLock::new();
            let buf = BUF.get_or_init(|| vec![b'h'; CHUNK]);
            let header = format!("${len}\r\n").into_bytes();
            let mut sent = 0u64;
            let mut ok = send(s, &header, stats, stop);
            if ok {
                sent += header.len() as u64;
            }
            let mut left = len;
            while ok && left > 0 {
                let n = left.min(CHUNK);
                ok = send(s, &buf[..n], stats, stop);
                if ok {
                    sent += n as u64;
                    left -= n;
                }
            }
            ok = ok && send(s, b"\r\n", stats, stop);
            if ok {
                sent += 2;
                RogueStats::add(&stats.complete_values, 1);
            }
            stats.max_value_reply.fetch_max(sent, Ordering::Relaxed);
            ok
        }
        Misbehaviour::MovedToDead {
            dead_port,
            slots_on_self,
        } => {
            let reply = if name == b"CLUSTER" {
                // One range and its master (ip, port, id).
                let master = if slots_on_self { port } else { dead_port };
                let id = "d".repeat(40);
                format!(
                    "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$9\r\n127.0.0.1\r\n:{master}\r\n${}\r\n{id}\r\n",
                    id.len()
                )
                .into_bytes()
            } else if args.len() >= 2
                && !matches!(
                    &name[..],
                    b"AUTH" | b"HELLO" | b"SELECT" | b"CLIENT" | b"PING" | b"READONLY" | b"INFO"
                )
            {
                format!("-MOVED 0 127.0.0.1:{dead_port}\r\n").into_bytes()
            } else {
                simple.to_vec()
            };
            send(s, &reply, stats, stop)
        }
        Misbehaviour::Silent | Misbehaviour::Garbage { .. } => true,
    }
}

/// Write all of `bytes`, counting what the kernel took; false if the
/// client is gone, stopped reading for [`STALL`], or the rogue stops.
fn send(s: &mut TcpStream, mut bytes: &[u8], stats: &RogueStats, stop: &AtomicBool) -> bool {
    let mut last_progress = Instant::now();
    while !bytes.is_empty() {
        if stop.load(Ordering::Relaxed) || last_progress.elapsed() > STALL {
            return false;
        }
        match s.write(bytes) {
            Ok(0) => return false,
            Ok(n) => {
                RogueStats::add(&stats.bytes_sent, n as u64);
                bytes = &bytes[n..];
                last_progress = Instant::now();
            }
            Err(e) if timed_out(&e) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

enum Parsed {
    Incomplete,
    Invalid,
    /// The arguments and how many bytes they took.
    Command(Vec<Vec<u8>>, usize),
}

/// One request from the front of `buf`: a RESP array of bulk strings (what
/// clients send) or an inline command (a line of words).
fn parse_command(buf: &[u8]) -> Parsed {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() > 64 * 1024 {
            Parsed::Invalid
        } else {
            Parsed::Incomplete
        };
    };
    if buf[0] != b'*' {
        let words = buf[..eol]
            .split(|&b| b == b' ')
            .filter(|w| !w.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        return Parsed::Command(words, eol + 2);
    }
    let Some(count) = number(&buf[1..eol]) else {
        return Parsed::Invalid;
    };
    let mut at = eol + 2;
    let mut args = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let Some(rel) = buf[at..].windows(2).position(|w| w == b"\r\n") else {
            return Parsed::Incomplete;
        };
        if buf[at] != b'$' {
            return Parsed::Invalid;
        }
        let Some(len) = number(&buf[at + 1..at + rel]) else {
            return Parsed::Invalid;
        };
        let start = at + rel + 2;
        if buf.len() < start + len + 2 {
            return Parsed::Incomplete;
        }
        args.push(buf[start..start + len].to_vec());
        at = start + len + 2;
    }
    Parsed::Command(args, at)
}

fn number(digits: &[u8]) -> Option<usize> {
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Resident memory of a process from `/proc/<pid>/status`, bytes:
/// (`VmRSS`, `VmHWM`, the peak). `None` if it is gone.
pub(crate) fn resident(pid: i32) -> Option<(u64, u64)> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    Some((kib("VmRSS:")?, kib("VmHWM:")?))
}
