//! The TLS client: handshakes, sessions, requests.

use super::*;

/// A TLS client context (no certificate verification); sessions it returns
/// can only be resumed through the same client.
pub(crate) struct Client {
    ctx: SslContext,
    id: u64,
    nodelay: bool,
}

/// A session to resume, tied to the [`Client`] that made it.
#[derive(Clone)]
pub(crate) struct Session {
    inner: SslSession,
    client: u64,
}

/// The client's side of an open connection whose handshake is done.
pub(crate) struct Open {
    stream: SslStream<TcpStream>,
    resumed: bool,
    client: u64,
}

/// Counts of a TLS load loop (fault and soak tests): full handshakes,
/// resumption attempts, how many resumed, and failed connections.
#[derive(Default)]
pub(crate) struct Tally {
    pub full: std::sync::atomic::AtomicU64,
    pub attempts: std::sync::atomic::AtomicU64,
    pub resumed: std::sync::atomic::AtomicU64,
    pub errors: std::sync::atomic::AtomicU64,
}

impl Tally {
    /// Count one connection that offered a session (`offered`) or not, and
    /// return the session to offer next: the one this connection got, or
    /// `current` if it failed (a connection cut by a kill, say).
    pub(crate) fn record(
        &self,
        offered: bool,
        outcome: Result<Reply, String>,
        current: Option<Session>,
    ) -> Option<Session> {
        use std::sync::atomic::Ordering::Relaxed;
        match outcome {
            Ok(reply) => {
                if offered {
                    self.attempts.fetch_add(1, Relaxed);
                    if reply.resumed {
                        self.resumed.fetch_add(1, Relaxed);
                    }
                } else {
                    self.full.fetch_add(1, Relaxed);
                }
                Some(reply.session)
            }
            Err(_) => {
                self.errors.fetch_add(1, Relaxed);
                current
            }
        }
    }
}

/// A response, read to the end of the connection.
#[derive(Clone, Debug)]
pub(crate) struct Reply {
    pub resumed: bool,
    pub session: Session,
    pub status: u16,
    pub protocol: String,
    pub raw: Vec<u8>,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

pub(crate) static CLIENT_IDS: AtomicU64 = AtomicU64::new(1);

impl Client {
    /// Pinned to one protocol version.
    pub(crate) fn new(tls: Tls) -> Client {
        Client::build(tls.version(), tls.version())
    }

    /// TLS 1.2 or 1.3, whichever the server prefers.
    pub(crate) fn any() -> Client {
        Client::build(SslVersion::TLS1_2, SslVersion::TLS1_3)
    }

    fn build(min: SslVersion, max: SslVersion) -> Client {
        let mut b = SslContextBuilder::new(SslMethod::tls_client()).expect("SSL_CTX_new");
        b.set_verify(SslVerifyMode::NONE);
        b.set_min_proto_version(Some(min)).expect("min version");
        b.set_max_proto_version(Some(max)).expect("max version");
        // httpd may close without close_notify after `Connection: close`.
        b.set_options(SslOptions::IGNORE_UNEXPECTED_EOF);
        Client {
            ctx: b.build(),
            id: CLIENT_IDS.fetch_add(1, Ordering::Relaxed),
            nodelay: false,
        }
    }

    /// Its connections with `TCP_NODELAY`: after a resumed (abbreviated)
    /// TLS 1.2 handshake the client's Finished and its request are two
    /// small writes in a row, and without it Nagle holds the request until
    /// the server's delayed ACK (40 ms on Linux). For tests that make
    /// thousands of connections.
    pub(crate) fn nodelay(mut self) -> Client {
        self.nodelay = true;
        self
    }

    /// Connect to 127.0.0.1:`port` and complete the handshake, offering
    /// `session` (which must come from this client).
    pub(crate) fn handshake(&self, port: u16, session: Option<&Session>) -> Result<Open, String> {
        self.handshake_within(port, session, WAIT)
    }

    /// [`Client::handshake`] with every socket operation bounded by `limit`.
    pub(crate) fn handshake_within(
        &self,
        port: u16,
        session: Option<&Session>,
        limit: Duration,
    ) -> Result<Open, String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let tcp =
            TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect {addr}: {e}"))?;
        tcp.set_read_timeout(Some(limit))
            .map_err(|e| e.to_string())?;
        tcp.set_write_timeout(Some(limit))
            .map_err(|e| e.to_string())?;
        if self.nodelay {
            tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        }
        let mut ssl = Ssl::new(&self.ctx).map_err(|e| format!("SSL_new: {e}"))?;
        if let Some(s) = session {
            assert_eq!(
                s.client, self.id,
                "a session can only be resumed by the Client that made it"
            );
            // SAFETY: the session was returned by a connection of this same
            // SslContext (checked just above), as set_session requires.
            unsafe { ssl.set_session(&s.inner) }.map_err(|e| format!("set_session: {e}"))?;
        }
        let stream = ssl.connect(tcp).map_err(|e| format!("handshake: {e}"))?;
        let resumed = stream.ssl().session_reused();
        Ok(Open {
            stream,
            resumed,
            client: self.id,
        })
    }
}

impl Open {
    /// Whether the handshake resumed the offered session.
    pub(crate) fn resumed(&self) -> bool {
        self.resumed
    }

    /// Send `GET <target>` with `Connection: close` and read the whole
    /// response (so TLS 1.3 session tickets are processed).
    pub(crate) fn request(mut self, target: &str) -> Result<Reply, String> {
        let req = format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        self.stream
            .write_all(req.as_bytes())
            .map_err(|e| format!("write request: {e}"))?;
        let mut raw = Vec::new();
        self.stream
            .read_to_end(&mut raw)
            .map_err(|e| format!("read response ({} bytes so far): {e}", raw.len()))?;
        let status = raw
            .split(|&b| b == b'\r')
            .next()
            .and_then(|l| std::str::from_utf8(l).ok())
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no HTTP status line in {:?}", String::from_utf8_lossy(&raw)))?;
        // Answer the server's close_notify. Without SSL_SENT_SHUTDOWN,
        // SSL_free calls the session "bad" and marks it not resumable.
        let _ = self.stream.shutdown();
        let ssl = self.stream.ssl();
        // A copy of the session (not the connection's object) to resume.
        let session = ssl
            .session()
            .ok_or("no session after the response")?
            .to_der()
            .and_then(|der| SslSession::from_der(&der))
            .map_err(|e| format!("copy session: {e}"))?;
        Ok(Reply {
            resumed: self.resumed,
            session: Session {
                inner: session,
                client: self.client,
            },
            status,
            protocol: ssl.version_str().to_string(),
            raw,
        })
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id: String = self.inner.id().iter().map(|b| format!("{b:02x}")).collect();
        f.debug_struct("Session")
            .field("id", &id)
            .field("client", &self.client)
            .finish()
    }
}

impl Session {
    /// The session id as the client knows it, lower-case hex. For TLS 1.2
    /// (tickets off) it is the id the server caches the session under.
    pub(crate) fn id_hex(&self) -> String {
        self.inner.id().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The id the *server* looks the session up by, lower-case hex: for
    /// TLS 1.3 the stateful ticket the client holds (with `SSLSessionTickets
    /// off` OpenSSL's ticket is the server's 32-byte session id; the
    /// client's own id is a hash of it), for TLS 1.2 the session id.
    pub(crate) fn server_id_hex(&self) -> String {
        match self.ticket() {
            Some(ticket) => ticket.iter().map(|b| format!("{b:02x}")).collect(),
            None => self.id_hex(),
        }
    }

    /// The ticket the client holds (the server's opaque bytes: with a
    /// stateless ticket, key name (16) ++ IV (16) ++ sealed state ++ MAC),
    /// if any.
    pub(crate) fn ticket(&self) -> Option<Vec<u8>> {
        extern "C" {
            // libssl: int SSL_SESSION_has_ticket(const SSL_SESSION *);
            fn SSL_SESSION_has_ticket(s: *const openssl_sys::SSL_SESSION) -> libc::c_int;
            // libssl: void SSL_SESSION_get0_ticket(const SSL_SESSION *,
            //                                      const unsigned char **, size_t *);
            fn SSL_SESSION_get0_ticket(
                s: *const openssl_sys::SSL_SESSION,
                tick: *mut *const u8,
                len: *mut libc::size_t,
            );
        }
        // A `&SslSessionRef` is the C pointer itself (foreign-types' opaque
        // reference: its `as_ptr` is this very cast).
        let session: &openssl::ssl::SslSessionRef = &self.inner;
        let raw =
            (session as *const openssl::ssl::SslSessionRef).cast::<openssl_sys::SSL_SESSION>();
        // SAFETY: `raw` is the live session `self.inner` owns.
        if unsafe { SSL_SESSION_has_ticket(raw) } == 0 {
            return None;
        }
        let mut tick: *const u8 = std::ptr::null();
        let mut len: libc::size_t = 0;
        // SAFETY: `raw` is live; both out-pointers are valid for writing.
        unsafe { SSL_SESSION_get0_ticket(raw, &raw mut tick, &raw mut len) };
        if tick.is_null() {
            return None;
        }
        // SAFETY: OpenSSL points `tick` at `len` bytes the session owns,
        // alive while `self.inner` is (we copy them at once).
        Some(unsafe { std::slice::from_raw_parts(tick, len) }.to_vec())
    }

    /// The session's master key, raw bytes (TLS 1.3: its resumption PSK).
    pub(crate) fn master_key(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.inner.master_key_len()];
        let n = self.inner.master_key(&mut buf);
        buf.truncate(n);
        buf
    }

    /// The session's master key (TLS 1.3: its resumption PSK), lower-case hex.
    pub(crate) fn master_key_hex(&self) -> String {
        let mut buf = vec![0u8; self.inner.master_key_len()];
        let n = self.inner.master_key(&mut buf);
        buf[..n].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The session's creation time (seconds since the epoch).
    pub(crate) fn time(&self) -> i64 {
        #[allow(clippy::useless_conversion)]
        i64::from(self.inner.time())
    }

    /// A copy whose creation time is now. A TLS 1.3 client does not offer a
    /// ticket older than its lifetime hint; with a refreshed time it does,
    /// so a test can check that the *server's cache* refuses an expired id.
    pub(crate) fn refreshed(&self) -> Session {
        extern "C" {
            // libssl (linked through openssl-sys): long SSL_SESSION_set_time(SSL_SESSION *, long).
            fn SSL_SESSION_set_time(
                s: *mut openssl_sys::SSL_SESSION,
                t: libc::c_long,
            ) -> libc::c_long;
        }
        let der = self.inner.to_der().expect("i2d_SSL_SESSION");
        let mut p = der.as_ptr();
        // SAFETY: `p` points at `der.len()` readable bytes; d2i allocates a
        // new session (or returns null) and advances `p` within them.
        let raw = unsafe {
            openssl_sys::d2i_SSL_SESSION(
                std::ptr::null_mut(),
                &raw mut p,
                der.len() as libc::c_long,
            )
        };
        assert!(!raw.is_null(), "d2i_SSL_SESSION failed");
        // SAFETY: `raw` is a valid session we own.
        unsafe { SSL_SESSION_set_time(raw, unix_now() as libc::c_long) };
        // SAFETY: `raw` is valid; a null output pointer asks for the length only.
        let len = unsafe { openssl_sys::i2d_SSL_SESSION(raw, std::ptr::null_mut()) };
        let mut out = vec![0u8; usize::try_from(len).unwrap_or(0)];
        let mut q = out.as_mut_ptr();
        // SAFETY: `out` has the `len` bytes i2d said it needs; it writes at
        // `q` and advances it.
        let n = unsafe { openssl_sys::i2d_SSL_SESSION(raw, &raw mut q) };
        // SAFETY: `raw` is ours and no longer used.
        unsafe { openssl_sys::SSL_SESSION_free(raw) };
        assert!(len > 0 && n == len, "i2d_SSL_SESSION failed");
        out.truncate(n as usize);
        Session {
            inner: SslSession::from_der(&out).expect("SslSession::from_der"),
            client: self.client,
        }
    }
}

/// Have `cmd` drop to `user` (uid, gid), if given, between fork and exec.
pub(crate) fn drop_privileges(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        // SAFETY: the closure only calls async-signal-safe functions
        // (setgroups, setgid, setuid) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}
