//! End-to-end tests across the reflex crates, one binary so it links once.
//!
//! The binary installs a counting global allocator that counts only on threads that switched it on, so the
//! loop threads' per-frame allocations can be measured inside a real session while other tests run.
#![allow(unsafe_code)] // reason: a global allocator is an unsafe trait; it only counts and delegates to System

mod alloc;
mod backends;
mod cameras;
mod default_session;
mod latency_report;
mod protocols;
mod scripts;
mod triggers;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

struct CountingAllocator;

fn count(bytes: usize) {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
            let _ = BYTES.try_with(|b| b.set(b.get() + bytes as u64));
        }
    });
}

// SAFETY: every call is delegated unchanged to the system allocator; counting touches only const-initialised
// thread-locals (no allocation, no destructor).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Start counting this thread's allocations from zero.
pub fn count_begin() {
    ALLOCS.with(|n| n.set(0));
    BYTES.with(|b| b.set(0));
    COUNTING.with(|on| on.set(true));
}

/// Stop counting; returns (allocations, bytes) since `count_begin`.
pub fn count_end() -> (u64, u64) {
    COUNTING.with(|on| on.set(false));
    (ALLOCS.with(Cell::get), BYTES.with(Cell::get))
}
