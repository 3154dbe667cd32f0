//! The executable's own pages: its code and constants, resident once touched, and given
//! back when they sit unused.
//!
//! Quiver's binary has ~155 MB of code (most of it DataFusion's). A page of it stays
//! resident once anything on it ran, and the kernel maps the 64 KiB around every page a
//! fault reads (fault-around). On the peer benchmark the server had 47 MiB of code and 14
//! MiB of constants resident, of which one pass over every query touched 8 MiB and 1 MiB
//! (`Referenced:` in `/proc/PID/smaps` after clearing the bits; docs/benchmarks.md, "Session
//! 28"): startup, loading and planning code run once, and their neighbours. Those pages
//! are clean copies of the file, so [`release`] drops them from the process
//! (`MADV_DONTNEED`; the page cache keeps them) and the next use maps them again with a
//! minor fault. Only segments the program never writes are released: the writable one
//! (data, and the relocated tables the loader made read-only afterwards) holds the process's
//! own state. A debugger's breakpoints and uprobes (bpftrace, perf probes) live in private
//! copies of code pages, which a release drops with the rest: trace or debug a server
//! started with `--keep-unused-code`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Times the code pages were released (`quiver_code_page_releases_total`).
static RELEASES: AtomicU64 = AtomicU64::new(0);

/// How many times [`release`] ran.
pub fn releases() -> u64 {
    RELEASES.load(Ordering::Relaxed)
}

/// The address ranges of the running executable's segments that are loaded and never
/// writable (its code and constants), from its program headers.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn read_only_segments() -> Vec<(usize, usize)> {
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid `dl_phdr_info` whose `dlpi_phdr` points at
        // `dlpi_phnum` headers; `data` is the vector `read_only_segments` passed.
        unsafe {
            let out = &mut *(data as *mut Vec<(usize, usize)>);
            let info = &*info;
            if !info.dlpi_phdr.is_null() {
                let headers = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
                for h in headers {
                    if h.p_type == libc::PT_LOAD && h.p_flags & libc::PF_W == 0 {
                        let start = info.dlpi_addr as usize + h.p_vaddr as usize;
                        out.push((start, start + h.p_memsz as usize));
                    }
                }
            }
        }
        // The first object is the executable: stop there.
        1
    }
    let mut out: Vec<(usize, usize)> = Vec::new();
    // SAFETY: `each` only reads the headers and writes into `out`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(each), &mut out as *mut _ as *mut libc::c_void) };
    out
}

/// Drops the executable's resident code and constant pages from the process (they are
/// mapped again, from the page cache, when next used). Returns the bytes of address space
/// it covered, or `None` where there is no such call.
pub fn release() -> Option<usize> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: sysconf takes a name and returns a number.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
        let mut covered = 0;
        for (start, end) in read_only_segments() {
            // Whole pages inside the segment only: a page shared with a writable segment
            // must keep its contents.
            let (s, e) = (start.div_ceil(page) * page, end / page * page);
            if e <= s {
                continue;
            }
            // SAFETY: [s, e) lies in a mapped segment the program never writes, so every
            // page of it can be read again from the file; MADV_DONTNEED changes no byte a
            // reader sees.
            if unsafe { libc::madvise(s as *mut libc::c_void, e - s, libc::MADV_DONTNEED) } == 0 {
                covered += e - s;
            }
        }
        RELEASES.fetch_add(1, Ordering::Relaxed);
        Some(covered)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A big table of constants, read once so its pages are resident.
    static TABLE: [u64; 1 << 18] = {
        let mut t = [0u64; 1 << 18];
        let mut i = 0;
        while i < t.len() {
            t[i] = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            i += 1;
        }
        t
    };

    fn sum() -> u64 {
        TABLE.iter().fold(0u64, |a, &x| a.wrapping_add(x))
    }

    /// Released pages leave the process's resident set, and code and constants read after
    /// it are what they were (the 2 MiB table and the code that sums it); writable state
    /// is untouched.
    #[test]
    fn released_pages_come_back_unchanged() {
        static mut STATE: u64 = 7;
        // SAFETY: this test alone touches STATE.
        unsafe { STATE = 11 };
        let before = sum();
        let resident = crate::memory::resident_file().expect("RssFile");
        let covered = release().expect("linux");
        assert!(covered > 1 << 20, "{covered}");
        let after_release = crate::memory::resident_file().expect("RssFile");
        assert!(
            after_release + (1 << 20) < resident,
            "{after_release} after, {resident} before"
        );
        assert_eq!(sum(), before);
        // SAFETY: as above.
        assert_eq!(unsafe { STATE }, 11);
        assert!(releases() >= 1);
    }
}
