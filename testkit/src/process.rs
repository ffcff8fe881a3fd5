//! A server process a test owns: spawned in its own process group (a signal
//! to the test's group never reaches it) with SIGKILL as its parent-death
//! signal (it dies with the test thread that started it), signalled by pid
//! while it is our unreaped child, killed and reaped on drop.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::POLL;

/// A running server started by [`ServerProcess::spawn`].
pub struct ServerProcess {
    /// `None` once killed and reaped.
    child: Option<Child>,
    /// What it is, for messages (`redis-server on port 20001`).
    name: String,
}

impl ServerProcess {
    /// Spawn `command` (its stdio already set by the caller) as a server
    /// this test owns; `name` says what it is in messages.
    pub fn spawn(command: &mut Command, name: String) -> ServerProcess {
        // SAFETY: between fork and exec the closure only calls the
        // async-signal-safe setpgid and prctl (no allocation, no lock): its
        // own process group, and SIGKILL when the thread that forked it
        // dies.
        unsafe {
            command.pre_exec(|| {
                if libc::setpgid(0, 0) != 0
                    || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0
                {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name} ({:?}): {e}", command.get_program()));
        ServerProcess {
            child: Some(child),
            name,
        }
    }

    /// Its exit status if it has exited (it is then reaped); `None` while
    /// it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().expect("try_wait")?;
        self.child = None;
        Some(status)
    }

    /// SIGSTOP: the server hangs; connects still complete into the kernel's
    /// backlog, nothing is answered.
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`ServerProcess::stop`].
    pub fn cont(&self) {
        self.signal(libc::SIGCONT);
    }

    /// SIGKILL and reap (a stopped process dies of it all the same): its
    /// ports refuse connections. Nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: kill(2) takes plain integers; `pid` is our own child, not
        // yet reaped (we hold its `Child` and reap only in `kill`/`exited`),
        // so the pid cannot have been reused by another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            rc,
            0,
            "kill({pid}, {signal}) on {}: {}",
            self.name,
            io::Error::last_os_error()
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait for a child up to `limit`; `None` if it is still running.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            Ok(None) => return None,
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
    }
}

/// What a command run by [`run_captured`] printed, and how it ended.
#[derive(Debug)]
pub struct Captured {
    /// `None`: it did not finish within the limit (it was killed).
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

/// Run `command` (stdin from /dev/null) for at most `limit`, its stdout
/// and stderr read whole on threads of their own (so that a full pipe
/// never stalls it); killed and reaped when the limit passes.
pub fn run_captured(command: &mut Command, limit: Duration) -> Captured {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", command.get_program()));
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let status = wait_child(&mut child, limit);
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Captured {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
