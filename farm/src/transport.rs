//! Bytes to and from one Redis node, under one deadline per operation.
//!
//! # Why not redis-rs's own connections
//!
//! redis-rs (1.8, sync) bounds the TCP connect by its timeout, then runs the
//! TLS handshake with no timeout at all (a server that accepts and never
//! completes the handshake held every httpd child for 10 s, until the
//! client gave up), builds a TLS connector and loads the CA store for every
//! connection (57–66 ms a connect on loopback, so the default 20 ms timeout
//! never connected over TLS), bounds each read rather than the operation (a
//! server dripping one byte every 20 ms held a 200 ms lookup for good), and
//! reads a reply of any size (64 MiB per lookup from a lying server). None
//! of that can be set from outside. So the farm owns the transport and keeps
//! redis-rs for what it is good at, the protocol: [`redis::Cmd`] packs every
//! command and [`redis::Parser`] reads every reply (see `crate::conn`).
//!
//! # One deadline, one budget
//!
//! A [`Socket`] is armed before each operation with a deadline and a byte
//! budget ([`Socket::arm`]). Every `read` and `write` it does, including the
//! ones OpenSSL makes during the TLS handshake (the [`Stream::Tls`] runs
//! over the socket), first sets the kernel timeout to what is left of the
//! deadline, and fails with `TimedOut` once nothing is left; every read
//! also counts against the budget and fails once it is spent. So connect,
//! TLS handshake, AUTH/SELECT, request and the whole reply share one bound,
//! however the peer drips, and no reply makes us read more than the budget.
//!
//! # Built once
//!
//! The [`Connector`] (the TLS context, with its CA store and client
//! certificate) is built by `Farm::new`, in httpd's parent at init, and
//! shared by every child and thread; a connection costs a TCP connect and a
//! handshake, nothing else. The handshake resumes the process's latest TLS
//! session with Redis when it can (Redis caches sessions by default:
//! `tls-session-caching yes`), so a child's later connections skip the
//! certificate check and most of the key exchange's cost. Host names are resolved there too, once:
//! `getaddrinfo` has no timeout, so no caller ever waits on the resolver.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use std::os::fd::AsRawFd;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslSession, SslStream, SslVerifyMode};

use crate::endpoint::TlsFiles;

/// The shortest timeout handed to the kernel (zero would mean "none").
const MIN_SLICE: Duration = Duration::from_millis(1);

/// Where a node is, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A TCP address; `host` is the name the certificate must carry.
    Tcp {
        /// The socket addresses to try, in order.
        addrs: Vec<SocketAddr>,
        /// The configured host (name or IP literal).
        host: String,
        /// The configured port.
        port: u16,
    },
    /// A Unix socket.
    Unix(PathBuf),
}

impl Address {
    /// Resolves `host:port` now (the caller is httpd's parent at init, or a
    /// cluster reply naming an IP): a name costs a resolver lookup here,
    /// never in a handshake.
    pub fn resolve(host: &str, port: u16) -> io::Result<Address> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (bare, port).to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{host} has no address"),
            ));
        }
        Ok(Address::Tcp {
            addrs,
            host: bare.to_string(),
            port,
        })
    }

    /// `host:port` for an IP literal only (a cluster's own replies): `None`
    /// for a name, which would need the resolver inside a caller's wait.
    pub fn literal(host: &str, port: u16) -> Option<Address> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = bare.parse().ok()?;
        Some(Address::Tcp {
            addrs: vec![SocketAddr::new(ip, port)],
            host: bare.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp { host, port, .. } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Tcp { host, port, .. } => write!(f, "{host}:{port}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Makes connections: plain, or TLS over a context built once.
#[derive(Clone)]
pub struct Connector {
    tls: Option<SslConnector>,
    /// The latest TLS session the server gave this process, offered by its
    /// next connection ([`Stream::keep_session`] sets it after a reply was
    /// read, when TLS 1.3's tickets have arrived). Only ever locked in a
    /// child, never in httpd's parent, which makes no connection.
    ///
    /// Not OpenSSL's new-session callback: the openssl crate keeps such a
    /// callback in an `SSL_CTX` ex_data slot whose free function lives in
    /// this DSO, registered process-wide; httpd's parent builds this
    /// context, unloads the DSO at every restart and frees contexts after
    /// (a crash seen in the tests: SIGSEGV at the second configuration
    /// pass). Nothing here registers ex_data in the parent.
    session: Arc<Mutex<Option<SslSession>>>,
}

impl Connector {
    /// Plain TCP or Unix sockets.
    pub fn plain() -> Connector {
        Connector {
            tls: None,
            session: Arc::default(),
        }
    }

    /// TLS with the server verified against `files.ca` (or the system trust
    /// store) and, if given, a client certificate. Reads the files now.
    pub fn tls(files: &TlsFiles) -> Result<Connector, openssl::error::ErrorStack> {
        let mut builder = SslConnector::builder(SslMethod::tls_client())?;
        if let Some(ca) = &files.ca {
            builder.set_ca_file(ca)?;
        }
        if let (Some(cert), Some(key)) = (&files.cert, &files.key) {
            builder.set_certificate_chain_file(cert)?;
            builder.set_private_key_file(key, SslFiletype::PEM)?;
            builder.check_private_key()?;
        }
        builder.set_verify(SslVerifyMode::PEER);
        Ok(Connector {
            tls: Some(builder.build()),
            session: Arc::default(),
        })
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Connects to `address` (TCP connect and, for TLS, the handshake)
    /// before `deadline`, reading at most `budget` bytes on the way.
    pub fn connect(
        &self,
        address: &Address,
        deadline: Instant,
        budget: usize,
    ) -> io::Result<Stream> {
        let socket = match address {
            Address::Tcp { addrs, .. } => {
                let mut last = None;
                let mut connected = None;
                for addr in addrs {
                    let left = left(deadline)?;
                    match TcpStream::connect_timeout(addr, left) {
                        Ok(s) => {
                            connected = Some(s);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                let stream = connected.ok_or_else(|| {
                    last.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address"))
                })?;
                stream.set_nodelay(true)?;
                Inner::Tcp(stream)
            }
            Address::Unix(path) => {
                left(deadline)?;
                // A local socket's connect does not wait on a peer (it is
                // refused at once when the backlog is full).
                Inner::Unix(UnixStream::connect(path)?)
            }
        };
        let mut socket = Socket {
            inner: socket,
            deadline,
            budget,
        };
        socket.arm(deadline, budget);
        match (&self.tls, address) {
            (None, _) => Ok(Stream::Plain(socket)),
            (Some(tls), Address::Tcp { host, .. }) => {
                let mut config = tls.configure().map_err(io::Error::other)?;
                let latest = self
                    .session
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                if let Some(latest) = latest {
                    // SAFETY: the session was made by a connection of this
                    // same SslConnector's context (`Stream::keep_session`
                    // is the only writer of `self.session`).
                    unsafe { config.set_session(&latest) }.map_err(io::Error::other)?;
                }
                // The handshake's reads and writes go through `socket`,
                // so they are bounded by the same deadline.
                let stream = config.connect(host, socket).map_err(|e| match e {
                    openssl::ssl::HandshakeError::SetupFailure(e) => io::Error::other(e),
                    openssl::ssl::HandshakeError::Failure(m)
                    | openssl::ssl::HandshakeError::WouldBlock(m) => {
                        let why = m.error().to_string();
                        if Instant::now() >= deadline {
                            io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                        } else {
                            io::Error::other(format!("TLS handshake: {why}"))
                        }
                    }
                })?;
                Ok(Stream::Tls {
                    stream: Box::new(stream),
                    keep: Some(self.session.clone()),
                })
            }
            (Some(_), Address::Unix(_)) => Ok(Stream::Plain(socket)),
        }
    }
}

/// What is left before `deadline`, or `TimedOut`.
fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"))
    } else {
        Ok(left.max(MIN_SLICE))
    }
}

enum Inner {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// A connected socket whose every read and write is bounded by the armed
/// deadline, and whose reads by the armed budget (module doc).
pub struct Socket {
    inner: Inner,
    deadline: Instant,
    budget: usize,
}

impl Socket {
    /// Bounds what follows: nothing after `deadline`, at most `budget`
    /// bytes read.
    pub fn arm(&mut self, deadline: Instant, budget: usize) {
        self.deadline = deadline;
        self.budget = budget;
    }

    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        match &self.inner {
            Inner::Tcp(s) => s.set_read_timeout(Some(t)),
            Inner::Unix(s) => s.set_read_timeout(Some(t)),
        }
    }

    fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        match &self.inner {
            Inner::Tcp(s) => s.set_write_timeout(Some(t)),
            Inner::Unix(s) => s.set_write_timeout(Some(t)),
        }
    }

    /// A kernel timeout reads as `WouldBlock` on Linux: say what it is.
    fn timed_out(&self, e: io::Error) -> io::Error {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) || Instant::now() >= self.deadline
        {
            io::Error::new(io::ErrorKind::TimedOut, "timed out")
        } else {
            e
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, ReplyTooLarge));
        }
        self.set_read_timeout(left(self.deadline)?)?;
        let cap = buf.len().min(self.budget);
        let result = match &mut self.inner {
            Inner::Tcp(s) => s.read(&mut buf[..cap]),
            Inner::Unix(s) => s.read(&mut buf[..cap]),
        };
        let n = result.map_err(|e| self.timed_out(e))?;
        self.budget -= n;
        Ok(n)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.set_write_timeout(left(self.deadline)?)?;
        let result = match &mut self.inner {
            Inner::Tcp(s) => s.write(buf),
            Inner::Unix(s) => s.write(buf),
        };
        result.map_err(|e| self.timed_out(e))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The marker error of a spent read budget (a reply larger than any value
/// the cache accepts).
#[derive(Debug)]
pub struct ReplyTooLarge;

impl std::fmt::Display for ReplyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reply larger than the largest value the cache accepts")
    }
}

impl std::error::Error for ReplyTooLarge {}

/// A connection's byte stream.
pub enum Stream {
    /// TCP or Unix, no TLS.
    Plain(Socket),
    /// TLS over the socket; `keep` is where its session goes once (for the
    /// process's next connections), `None` once kept.
    Tls {
        stream: Box<SslStream<Socket>>,
        keep: Option<Arc<Mutex<Option<SslSession>>>>,
    },
}

impl Stream {
    /// Arms the underlying socket (see [`Socket::arm`]).
    pub fn arm(&mut self, deadline: Instant, budget: usize) {
        match self {
            Stream::Plain(s) => s.arm(deadline, budget),
            Stream::Tls { stream, .. } => stream.get_mut().arm(deadline, budget),
        }
    }

    fn socket(&self) -> &Socket {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls { stream, .. } => stream.get_ref(),
        }
    }

    /// After a reply was read: a TLS connection's session (its TLS 1.3
    /// tickets have arrived by now) becomes the one the process's next
    /// connections offer. Once per connection.
    pub fn keep_session(&mut self) {
        if let Stream::Tls { stream, keep } = self {
            if let Some(session) = stream.ssl().session() {
                if let Some(slot) = keep.take() {
                    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(session.to_owned());
                }
            }
        }
    }

    /// Whether bytes wait to be read now (poll with no wait; for TLS, also
    /// what OpenSSL already decrypted).
    pub fn readable_now(&self) -> bool {
        if let Stream::Tls { stream, .. } = self {
            if stream.ssl().pending() > 0 {
                return true;
            }
        }
        let fd = match &self.socket().inner {
            Inner::Tcp(s) => s.as_raw_fd(),
            Inner::Unix(s) => s.as_raw_fd(),
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `pfd` is one valid pollfd for the duration of the call;
        // a zero timeout makes poll(2) return at once.
        let n = unsafe { libc::poll(&raw mut pfd, 1, 0) };
        n > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
    }

    /// Whether the armed deadline has passed.
    pub fn past_deadline(&self) -> bool {
        Instant::now() >= self.socket().deadline
    }

    /// Whether the armed budget is spent.
    pub fn budget_spent(&self) -> bool {
        self.socket().budget == 0
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls { stream, .. } => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls { stream, .. } => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls { stream, .. } => stream.flush(),
        }
    }
}
