//! Real-time scheduling of the loop threads (Linux `SCHED_FIFO`).
//!
//! Woken loop threads otherwise wait behind ordinary threads (the writer, a compiler, a browser) for up to a
//! scheduler tick; with a FIFO priority they preempt them at once, which is what keeps the hand-off waits in
//! the tens of microseconds. The kernel's real-time throttling (`/proc/sys/kernel/sched_rt_runtime_us`,
//! 95 % by default) keeps a runaway thread from freezing the machine.

use serde::{Deserialize, Serialize};

/// `[realtime]`: scheduling of the loop threads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealtimeConfig {
    /// Ask for `SCHED_FIFO` for the loop threads; when refused (no `CAP_SYS_NICE`, no RT budget), the loop
    /// runs at normal priority and a one-line notice says so.
    pub enabled: bool,
    /// FIFO priority of the actuation thread (1–99; the highest: it is short and decides the output).
    pub actuation_priority: i32,
    /// FIFO priority of the capture thread.
    pub capture_priority: i32,
    /// FIFO priority of the inference thread (below capture and actuation: it runs for milliseconds at a time).
    pub inference_priority: i32,
    /// FIFO priority of the further cameras' inference threads (`[[camera]]`; the lowest, so the loop's own
    /// inference preempts them when cores are short).
    pub camera_inference_priority: i32,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            actuation_priority: 80,
            capture_priority: 70,
            inference_priority: 60,
            camera_inference_priority: 50,
        }
    }
}

impl RealtimeConfig {
    /// Check the priorities are in the FIFO range.
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("actuation_priority", self.actuation_priority),
            ("capture_priority", self.capture_priority),
            ("inference_priority", self.inference_priority),
            ("camera_inference_priority", self.camera_inference_priority),
        ] {
            if !(1..=99).contains(&p) {
                return Err(format!("realtime.{name} must be between 1 and 99, got {p}"));
            }
        }
        Ok(())
    }
}

/// Give `thread` (a running thread's handle, e.g. from `JoinHandleExt::as_pthread_t`) `SCHED_FIFO` at
/// `priority`; the OS error when refused.
pub fn promote(thread: libc::pthread_t, priority: i32) -> Result<(), std::io::Error> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `thread` is the handle of a thread that is alive (its JoinHandle is held by the caller), and
    // `param` lives across the call.
    #[allow(unsafe_code)]
    // reason: FFI to pthread_setschedparam; no memory is shared with C beyond the call
    let rc = unsafe { libc::pthread_setschedparam(thread, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(rc))
    }
}

/// Give the calling thread `SCHED_FIFO` at `priority`.
pub fn promote_current_thread(priority: i32) -> Result<(), std::io::Error> {
    // SAFETY: pthread_self() has no preconditions.
    #[allow(unsafe_code)] // reason: FFI call without arguments
    let me = unsafe { libc::pthread_self() };
    promote(me, priority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_range_checked() {
        assert!(RealtimeConfig::default().validate().is_ok());
        let bad = RealtimeConfig {
            inference_priority: 0,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("inference_priority"));
    }

    #[test]
    fn promotion_succeeds_or_says_why() {
        // Either outcome is legitimate (it depends on the machine's permissions); a refusal must carry the OS
        // reason, and success must really change the policy.
        let result = std::thread::spawn(|| {
            promote_current_thread(10).map(|()| {
                let mut policy = 0;
                let mut param = libc::sched_param { sched_priority: 0 };
                // SAFETY: valid handle of the calling thread, valid out-pointers.
                #[allow(unsafe_code)] // reason: reading back the policy just set
                let rc = unsafe {
                    libc::pthread_getschedparam(libc::pthread_self(), &mut policy, &mut param)
                };
                (rc, policy, param.sched_priority)
            })
        })
        .join()
        .unwrap();
        match result {
            Ok((rc, policy, prio)) => assert_eq!((rc, policy, prio), (0, libc::SCHED_FIFO, 10)),
            Err(e) => assert!(e.raw_os_error().is_some(), "{e}"),
        }
    }
}
