//! A graceful stop, as a value passed to whatever must stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Triggered once (by a signal, a test or the demo); the processing loop checks
/// it between records, takes a final checkpoint and returns.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<AtomicBool>);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub fn is_triggered(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}
