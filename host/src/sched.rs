//! Helper threads that do not preempt the processing thread.
//!
//! Linux lets a thread that wakes up preempt the one running on its core,
//! and a thread that slept gets that preference. So handing a checkpoint to
//! the checkpointer thread put it on the processing thread's core, and
//! processing waited while the checkpointer built its table: the hand-over
//! of a 1M-key checkpoint took 3.4 ms of a 3.8 ms stall in one of three
//! rounds (0.3 ms in the others). A helper marked `SCHED_BATCH` does not
//! preempt on wake-up: it runs on a free core, or when the running thread's
//! slice ends, with the same share of CPU as before. No privilege is needed
//! to choose it.
//!
//! The state reader is not marked: the processing thread waits for its
//! reads, and marked it waited more often (1,268 waits in 2 s against 773).

/// Marks the calling thread as a background helper (`SCHED_BATCH` on Linux;
/// nothing elsewhere). A failure is logged and otherwise ignored: the
/// thread still runs, as any other.
pub(crate) fn background_helper() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` only reads `param`, which lives across
        // the call; pid 0 is the calling thread.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        if rc != 0 {
            tracing::debug!("cannot make this thread a background helper: {}", std::io::Error::last_os_error());
        }
    }
}
