//! Giving freed heap back to the system.
//!
//! glibc's malloc keeps memory freed in the middle of its heaps (and in the arenas of worker
//! threads) mapped: after a burst — a peer's bulk of 100k states queued for the kernel, a big
//! table dump — the process stays at its peak RSS although the memory is free. `trim` returns
//! the free pages (glibc walks every arena and `madvise`s whole free pages away; a few
//! milliseconds for tens of megabytes).

/// Returns free heap pages to the system (a no-op outside glibc).
#[allow(unsafe_code)]
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers and only operates on glibc's own allocator state,
    // under the arena locks it takes itself, so it is safe to call from any thread at any time
    // (glibc documents it MT-Safe); Rust's global allocator here is that same malloc, whose
    // invariants it keeps. Its return value only says whether memory was released.
    unsafe {
        libc::malloc_trim(0);
    }
}
