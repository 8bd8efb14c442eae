// Starting real services for tests: free loopback ports, and child
// processes that die with the test process. Shared by the ZooKeeper and etcd
// harnesses, each of which includes it with `mod services { include!("services.rs"); }`
// (plain comments here: an included file cannot carry inner doc comments).

use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Spawns `cmd` so that the kernel SIGKILLs it when the test process dies,
/// however it dies: a JVM left behind would hold its ports and CPU.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits,
/// not the process. Forked from a test's own thread, a server would die as
/// soon as that thread ended (say, a helper thread that restarts a member),
/// so every JVM is forked from one thread that lives as long as the process.
pub fn spawn_with_parent_death_signal(mut cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the hook runs between fork and exec and only makes two
    // async-signal-safe system calls.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // If the test process died before prctl, no signal will come.
            if libc::getppid() != parent {
                return Err(io::Error::other("the test process exited"));
            }
            Ok(())
        });
    }
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("service-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the spawner thread");
        tx
    });
    let (reply, result) = mpsc::channel();
    spawner
        .send((cmd, reply))
        .expect("the spawner thread runs as long as the process");
    result
        .recv()
        .expect("the spawner thread answers every request")
}

/// `n` distinct loopback ports, free right now, chosen below the kernel's
/// ephemeral range: a port from that range could be taken as the local port
/// of some outgoing connection (a client reconnecting, say) while its server
/// is stopped, and `start` would then fail to bind it again.
pub fn free_ports(n: usize) -> Vec<u16> {
    const LOW: u32 = 10_000;
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let high = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&h| h > LOW + 1_000)
        .unwrap_or(32_768);
    // A random start, so that test processes running at once do not collide;
    // within a process the counter keeps ports distinct.
    let next = NEXT.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        AtomicU32::new(nanos ^ std::process::id().wrapping_mul(2_654_435_761))
    });
    let mut ports = Vec::with_capacity(n);
    for _ in 0..(high - LOW) {
        if ports.len() == n {
            break;
        }
        let port = (LOW + next.fetch_add(1, Ordering::Relaxed) % (high - LOW)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    assert_eq!(ports.len(), n, "found no {n} free loopback ports");
    ports
}
