//! A c10d process group (`csrc/distributed.cpp`): the TCPStore rendezvous, the Gloo
//! or NCCL backend, and the collectives the sharded engine uses. Every collective
//! returns a [`Work`] to wait on, so communication can overlap computation.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

#[repr(C)]
struct AbsaGroup {
    _private: [u8; 0],
}

#[repr(C)]
struct AbsaWork {
    _private: [u8; 0],
}

extern "C" {
    fn absa_dist_last_error() -> *const c_char;
    fn absa_dist_has_nccl() -> c_int;
    fn absa_dist_new(
        backend: *const c_char,
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        timeout_ms: i64,
        device_index: c_int,
    ) -> *mut AbsaGroup;
    fn absa_dist_free(group: *mut AbsaGroup);
    fn absa_dist_all_reduce(group: *mut AbsaGroup, t: *mut c_void) -> *mut AbsaWork;
    fn absa_dist_all_gather(group: *mut AbsaGroup, output: *mut c_void, input: *mut c_void) -> *mut AbsaWork;
    fn absa_dist_reduce_scatter(group: *mut AbsaGroup, output: *mut c_void, input: *mut c_void) -> *mut AbsaWork;
    fn absa_dist_broadcast(group: *mut AbsaGroup, t: *mut c_void, root: c_int) -> *mut AbsaWork;
    fn absa_work_wait(work: *mut AbsaWork) -> c_int;
}

/// A collective that failed: a rank died or hung past the timeout, or c10d refused
/// the call. The run cannot go on; the job system retries it from its checkpoint.
#[derive(Debug, thiserror::Error)]
#[error("c10d {what}: {message}")]
pub struct DistError {
    pub what: &'static str,
    pub message: String,
}

fn last_error(what: &'static str) -> DistError {
    // SAFETY: the shim returns a pointer to this thread's message, valid until its next failing call.
    let message = unsafe { CStr::from_ptr(absa_dist_last_error()) }.to_string_lossy().into_owned();
    DistError { what, message }
}

/// The communication backend: Gloo on the CPU, NCCL between CUDA devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Gloo,
    Nccl,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// NCCL for CUDA devices when this build has it, else Gloo (as torch's default).
    pub fn for_device(device: Device) -> Self {
        // SAFETY: a constant query.
        if device.is_cuda() && unsafe { absa_dist_has_nccl() } == 1 {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }
}

/// A pending collective. Dropping one without [`Work::wait`] still waits for it (its
/// buffers must outlive it) but loses its error.
pub struct Work {
    ptr: Option<NonNull<AbsaWork>>,
    what: &'static str,
}

impl Work {
    /// A collective already done (staged through host memory, see [`ProcessGroup`]).
    fn done(what: &'static str) -> Self {
        Work { ptr: None, what }
    }
}

impl Work {
    /// Blocks until the collective is done (for NCCL: until the current CUDA stream
    /// is ordered after it).
    pub fn wait(mut self) -> Result<(), DistError> {
        let Some(ptr) = self.ptr.take() else { return Ok(()) };
        // SAFETY: a live work from the shim, freed by this call.
        match unsafe { absa_work_wait(ptr.as_ptr()) } {
            0 => Ok(()),
            _ => Err(last_error(self.what)),
        }
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if let Some(ptr) = self.ptr.take() {
            // SAFETY: as in `wait`.
            unsafe { absa_work_wait(ptr.as_ptr()) };
        }
    }
}

/// One rank's membership of a c10d group. Gloo moves host memory: CUDA tensors given to
/// a Gloo group (ranks sharing one GPU) are staged through CPU copies, and such a
/// collective is done when it returns.
pub struct ProcessGroup {
    ptr: NonNull<AbsaGroup>,
    rank: usize,
    world: usize,
    backend: Backend,
}

// SAFETY: c10d backends may be used from any one thread at a time; the engine drives
// its group from the training thread.
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Joins the group of `world` ranks as `rank`: rank 0 hosts the TCPStore on
    /// `addr:port`, the others connect to it. `timeout` bounds the rendezvous and every
    /// collective; `device` is the rank's device (NCCL binds to it).
    pub fn join(backend: Backend, addr: &str, port: u16, rank: usize, world: usize, timeout: Duration, device: Device) -> Result<Self, DistError> {
        let init = |message: String| DistError { what: "init", message };
        let host = CString::new(addr).map_err(|e| init(e.to_string()))?;
        let name = CString::new(backend.name()).expect("no NUL");
        let device_index = match device {
            Device::Cuda(i) => i as c_int,
            _ => -1,
        };
        let timeout_ms = timeout.as_millis().min(i64::MAX as u128) as i64;
        // SAFETY: valid C strings for the call's duration; the shim copies what it keeps.
        let ptr = unsafe { absa_dist_new(name.as_ptr(), host.as_ptr(), port as c_int, rank as c_int, world as c_int, timeout_ms, device_index) };
        let ptr = NonNull::new(ptr).ok_or_else(|| last_error("init"))?;
        Ok(Self { ptr, rank, world, backend })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn work(&self, what: &'static str, ptr: *mut AbsaWork) -> Result<Work, DistError> {
        let ptr = NonNull::new(ptr).ok_or_else(|| last_error(what))?;
        Ok(Work { ptr: Some(ptr), what })
    }

    /// Whether `t` must go through host memory for this backend.
    fn staged(&self, t: &Tensor) -> bool {
        self.backend == Backend::Gloo && t.device().is_cuda()
    }

    /// Runs `collective` on a host copy of `output`, waits for it and copies the result
    /// back: a done [`Work`].
    fn through_host(
        &self,
        what: &'static str,
        output: &mut Tensor,
        collective: impl FnOnce(&mut Tensor) -> Result<Work, DistError>,
    ) -> Result<Work, DistError> {
        let mut host = output.to_device(Device::Cpu);
        collective(&mut host)?.wait()?;
        output.copy_(&host);
        Ok(Work::done(what))
    }

    /// Sums `t` over the ranks, in place.
    pub fn all_reduce(&self, t: &mut Tensor) -> Result<Work, DistError> {
        if self.staged(t) {
            return self.through_host("all_reduce", t, |host| self.all_reduce(host));
        }
        // SAFETY: live group and tensor handles (tch's handle is an at::Tensor*).
        self.work("all_reduce", unsafe { absa_dist_all_reduce(self.ptr.as_ptr(), t.as_mut_ptr() as *mut c_void) })
    }

    /// Every rank's `input` concatenated in rank order into `output` (world times its size).
    pub fn all_gather(&self, output: &mut Tensor, input: &Tensor) -> Result<Work, DistError> {
        if self.staged(output) {
            return self.through_host("all_gather", output, |host| self.all_gather(host, &input.to_device(Device::Cpu)));
        }
        // SAFETY: as above; the shim does not change the input handle.
        self.work("all_gather", unsafe { absa_dist_all_gather(self.ptr.as_ptr(), output.as_mut_ptr() as *mut c_void, input.as_ptr() as *mut c_void) })
    }

    /// `input` (world times `output`'s size) summed over the ranks; this rank gets its
    /// part in `output`.
    pub fn reduce_scatter(&self, output: &mut Tensor, input: &Tensor) -> Result<Work, DistError> {
        if self.staged(output) {
            return self.through_host("reduce_scatter", output, |host| self.reduce_scatter(host, &input.to_device(Device::Cpu)));
        }
        // SAFETY: as above.
        self.work("reduce_scatter", unsafe { absa_dist_reduce_scatter(self.ptr.as_ptr(), output.as_mut_ptr() as *mut c_void, input.as_ptr() as *mut c_void) })
    }

    /// `t` of rank `root` copied to every rank.
    pub fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<Work, DistError> {
        if self.staged(t) {
            return self.through_host("broadcast", t, |host| self.broadcast(host, root));
        }
        // SAFETY: as above.
        self.work("broadcast", unsafe { absa_dist_broadcast(self.ptr.as_ptr(), t.as_mut_ptr() as *mut c_void, root as c_int) })
    }

    /// The sums of `values` over the ranks (a small f64 all-reduce, waited).
    pub fn sum(&self, values: &[f64], device: Device) -> Result<Vec<f64>, DistError> {
        let mut t = Tensor::from_slice(values).to_device(device);
        self.all_reduce(&mut t)?.wait()?;
        Ok(Vec::<f64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double)).expect("a 1-D f64 tensor"))
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self, device: Device) -> Result<(), DistError> {
        self.sum(&[0.0], device).map(drop)
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the group was made by the shim and is freed once.
        unsafe { absa_dist_free(self.ptr.as_ptr()) };
    }
}
