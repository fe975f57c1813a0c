//! `absa-trainer launch`: torchrun's contract for our ranks. Starts this node's
//! ranks as child processes of the trainer binary with `RANK`, `WORLD_SIZE`,
//! `LOCAL_RANK`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT` set (global
//! rank 0 hosts the TCPStore there), passes SIGTERM and SIGINT on to them, and when
//! one rank fails stops the others, as torchrun does: a group is whole or not at all.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::RankEnv;
use crate::TrainError;

/// Where this node's ranks stand in the job's group.
#[derive(Clone, Debug)]
pub struct Launch {
    pub nproc_per_node: usize,
    pub nnodes: usize,
    pub node_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// How long the other ranks get to stop once one has failed, before SIGKILL.
    pub grace: Duration,
}

impl Launch {
    /// The environment of local rank `local`.
    pub fn rank_env(&self, local: usize) -> RankEnv {
        RankEnv {
            rank: self.node_rank * self.nproc_per_node + local,
            world: self.nnodes * self.nproc_per_node,
            local_rank: local,
            local_world: self.nproc_per_node,
            master_addr: self.master_addr.clone(),
            master_port: self.master_port,
        }
    }
}

/// Exit code of a rank that stopped on request (SIGTERM) at a step boundary, its
/// checkpoint intact: the launcher passes it on, so a worker can tell a stop from a
/// failure.
pub const STOPPED_EXIT_CODE: i32 = 3;

/// Exit code of a rank whose run cannot succeed as configured (bad data, model or
/// settings): a retry would fail the same way.
pub const PERMANENT_EXIT_CODE: i32 = 4;

/// The exit code a failed run ends the process with, when it is not the plain 1.
pub fn exit_code_of(e: &TrainError) -> Option<i32> {
    match e {
        TrainError::Stopped { .. } => Some(STOPPED_EXIT_CODE),
        TrainError::Config(_) | TrainError::Data { .. } | TrainError::Model(_) => Some(PERMANENT_EXIT_CODE),
        _ => None,
    }
}

fn rank_error_file(out: &Path, rank: usize) -> std::path::PathBuf {
    out.join(format!("rank-{rank}.error"))
}

/// Writes why rank `rank` failed beside the run's output, for [`rank_errors`].
pub fn record_rank_error(out: &Path, rank: usize, reason: impl std::fmt::Display) {
    let _ = std::fs::create_dir_all(out);
    let _ = std::fs::write(rank_error_file(out, rank), reason.to_string());
}

/// What the ranks of a failed run under `out` recorded, one `rank N: reason` each.
pub fn rank_errors(out: &Path, ranks: usize) -> Vec<String> {
    (0..ranks).filter_map(|r| std::fs::read_to_string(rank_error_file(out, r)).ok().map(|text| format!("rank {r}: {}", text.trim()))).collect()
}

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Makes SIGTERM and SIGINT set a flag instead of ending the process; true once one came.
pub fn install_stop_handler() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_stop_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_stop_signal as *const () as libc::sighandler_t);
    }
}

/// Whether SIGTERM or SIGINT came since [`install_stop_handler`].
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

fn exit_code(status: ExitStatus) -> i32 {
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: signals a child we started and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, sig) };
}

/// Runs this node's ranks of `program args` to their end and returns the exit code:
/// 0 when every rank succeeded, else the first failed rank's (128 + signal when one
/// was killed).
pub fn run(launch: &Launch, program: &Path, args: &[OsString]) -> std::io::Result<i32> {
    install_stop_handler();
    let mut children: Vec<(usize, Child)> = Vec::new();
    for local in 0..launch.nproc_per_node {
        let env = launch.rank_env(local);
        let mut command = Command::new(program);
        command.args(args).envs(env.vars()).env("GROUP_RANK", launch.node_rank.to_string());
        // SAFETY: prctl is async-signal-safe; a rank must not outlive its launcher.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        match command.spawn() {
            Ok(child) => children.push((env.rank, child)),
            Err(e) => {
                for (_, child) in &mut children {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(std::io::Error::new(e.kind(), format!("starting rank {} ({}): {e}", env.rank, program.display())));
            }
        }
    }
    tracing::info!(ranks = ?children.iter().map(|(r, c)| (*r, c.id())).collect::<Vec<_>>(), world = launch.nnodes * launch.nproc_per_node, node_rank = launch.node_rank, "ranks started");

    let mut failed: Option<i32> = None;
    let mut stopped_by_us: Option<Instant> = None;
    let mut forwarded = false;
    let mut running: Vec<(usize, Child)> = children;
    while !running.is_empty() {
        let mut still = Vec::new();
        for (rank, mut child) in running {
            match child.try_wait()? {
                Some(status) => {
                    let code = exit_code(status);
                    if code != 0 && failed.is_none() {
                        tracing::warn!(rank, code, "rank ended with an error: stopping the others");
                        failed = Some(code);
                    }
                }
                None => still.push((rank, child)),
            }
        }
        running = still;
        if stop_requested() && !forwarded {
            forwarded = true;
            for (_, child) in &running {
                signal(child, libc::SIGTERM);
            }
        }
        if failed.is_some() && stopped_by_us.is_none() {
            stopped_by_us = Some(Instant::now());
            for (_, child) in &running {
                signal(child, libc::SIGTERM);
            }
        }
        if stopped_by_us.is_some_and(|t| t.elapsed() > launch.grace) {
            for (_, child) in &running {
                signal(child, libc::SIGKILL);
            }
        }
        if !running.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(failed.unwrap_or(0))
}

/// A TCP port free on this host now (the OS's choice), for a group's store.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
