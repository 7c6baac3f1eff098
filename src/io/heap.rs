//! Giving freed memory back to the operating system.
//!
//! A push server on a small host pushes all day and is read now and then:
//! its memory must fall back once the frames are gone. glibc's malloc gets
//! in the way twice. It raises its mmap threshold each time a large mapped
//! block is freed, so after one burst of large pushes later frames of that
//! size come from the heap and stay resident after `free`; a fixed
//! threshold ([`configure`]) keeps every block of [`MMAP_THRESHOLD`] or more
//! in its own mapping, unmapped at once when freed. Smaller blocks can
//! still leave the heap fragmented, so once a turn has passed
//! [`TRIM_AFTER`] bytes of frames, `malloc_trim` runs one timer tick later
//! (at most once a tick, off the hot path of the turn itself).
//!
//! Other allocators (musl) already return large blocks; there both calls
//! do nothing.

/// Blocks this large or larger get their own mapping.
pub const MMAP_THRESHOLD: usize = 128 * 1024;
/// Free space at the top of the heap that `free` keeps rather than hands
/// back (fixing the mmap threshold also fixes this one, at 128 KiB, which
/// made every turn shrink and regrow the heap: a `brk` pair per push).
pub const TRIM_THRESHOLD: usize = 1 << 20;
/// Frame bytes passed through the loop after which a trim is scheduled.
pub const TRIM_AFTER: u64 = 4 << 20;

/// Fix the allocator's mmap threshold (call once, before serving).
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; no memory is passed.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int);
    }
}

/// Counts frame bytes since the last trim and says when to schedule one.
#[derive(Debug, Default)]
pub struct Trim {
    bytes: u64,
    armed: bool,
}

impl Trim {
    /// Account for a turn's frame bytes; true when a trim should be
    /// scheduled now (none is pending and enough has passed).
    pub fn note(&mut self, bytes: u64) -> bool {
        self.bytes += bytes;
        if self.armed || self.bytes < TRIM_AFTER {
            return false;
        }
        self.armed = true;
        true
    }

    /// The scheduled trim is due: return free heap pages to the OS.
    pub fn run(&mut self) {
        self.bytes = 0;
        self.armed = false;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_is_scheduled_once_per_threshold() {
        let mut trim = Trim::default();
        assert!(!trim.note(TRIM_AFTER - 1));
        assert!(trim.note(1));
        assert!(!trim.note(TRIM_AFTER), "one pending trim at a time");
        trim.run();
        assert!(!trim.note(1));
        assert!(trim.note(TRIM_AFTER));
    }
}
