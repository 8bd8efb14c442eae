//! Child processes of the demos: killed when dropped, and by the kernel when
//! the orchestrator itself dies, so no run leaves a process behind.

use std::fs::File;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A child process that is killed (SIGKILL) and reaped when dropped, unless it
/// already exited.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL now and reap.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.0.kill().context("cannot kill a child process")?;
        self.0.wait().context("cannot reap a child process")?;
        Ok(())
    }

    /// Writes `line` to the process's stdin (it must have been piped).
    pub fn tell(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self
            .0
            .stdin
            .as_mut()
            .context("the child's stdin is not a pipe")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .context("cannot write to a child's stdin")
    }

    /// Waits at most `timeout` for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs `cmd` with stdout and stderr appended to `log`.
pub fn spawn(mut cmd: Command, log: &Path) -> anyhow::Result<KillOnDrop> {
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out
        .try_clone()
        .context("cannot duplicate a log file handle")?;
    die_with_parent(&mut cmd);
    let child = cmd
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    Ok(KillOnDrop(child))
}

/// `n` distinct loopback ports that were free a moment ago (all bound at once,
/// so they differ; released right before the sidecars bind them).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("cannot find a free port on 127.0.0.1")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// Asks the kernel to SIGKILL the child when the orchestrator dies, so that a
/// `kill -9` of the demo itself leaves no sidecar behind (the job managers
/// also watch their stdin). Linux only: elsewhere, [`KillOnDrop`] is all.
#[cfg(target_os = "linux")]
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::raw::{c_int, c_ulong};
    use std::os::unix::process::CommandExt;

    // From <sys/prctl.h> and <signal.h>; declared here rather than adding a
    // dependency for two calls.
    const PR_SET_PDEATHSIG: c_int = 1;
    const SIGKILL: c_ulong = 9;
    const ESRCH: i32 = 3;
    unsafe extern "C" {
        fn prctl(option: c_int, ...) -> c_int;
        fn getppid() -> c_int;
    }

    let parent = std::process::id() as c_int;
    // SAFETY: between fork and exec only async-signal-safe calls are allowed;
    // prctl and getppid are plain system calls, and nothing here allocates
    // (`last_os_error` and `from_raw_os_error` only store the errno).
    unsafe {
        cmd.pre_exec(move || {
            if prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The orchestrator may have died before the prctl took effect
            // ("no such process": the parent is gone).
            if getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(ESRCH));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_cmd: &mut Command) {}
