//! The global allocator: mimalloc, called the way the standard library calls the C allocator.
//!
//! The `mimalloc` crate sends every allocation through `mi_malloc_aligned`, whose fast path
//! only covers blocks of at most 1 KiB; larger ones (a `HeaderMap`'s entries, say) take its
//! generic aligned path at about ten times the cost. Like `std`'s `System`, this shim calls
//! plain `mi_malloc` whenever the alignment is one `malloc` already guarantees (at most 16
//! bytes and no more than the size) and leaves only over-aligned requests to the aligned entry
//! points. Besides `crates/waf`'s FFI module, this file is the workspace's only `unsafe` code.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// `malloc`'s alignment guarantee on the 64-bit targets we build for (`max_align_t`).
const MIN_ALIGN: usize = 16;

/// See the module docs.
pub struct Alloc;

fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY: each method forwards to the mimalloc function with the same contract. Plain
// `mi_malloc`/`mi_zalloc`/`mi_realloc` are used only for layouts whose alignment their blocks
// always have: with `MI_MAX_ALIGN_SIZE` 16 on 64-bit targets, mimalloc rounds small sizes to
// double words (`MI_ALIGN2W` in page-queue.c) and asserts that every block of 16 bytes or more
// is 16-byte aligned (alloc.c), which is C's `malloc` guarantee and the rule `std`'s `System`
// relies on. `mi_free` frees blocks from either family.
unsafe impl GlobalAlloc for Alloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi::mi_malloc(layout.size()).cast()
        } else {
            mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain(layout.align(), layout.size()) {
            mi::mi_zalloc(layout.size()).cast()
        } else {
            mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr.cast::<c_void>());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain(layout.align(), new_size) {
            mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
        } else {
            mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
        }
    }
}
