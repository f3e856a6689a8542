//! A Lua state's memory: one block of `memory_mb` MiB taken from the system when the script loads, every
//! page touched then (so no page fault later), handed out to Lua by TLSF (`rlsf`): O(1) per allocation and
//! per free, whatever the heap's history. [`lua_alloc`] is the state's `lua_Alloc`; when the block is used
//! up it refuses, and Lua raises its own "not enough memory" error: that is the script's memory limit.

use std::alloc::Layout;
use std::ffi::c_void;
use std::ptr::NonNull;

/// TLSF over one pool: 28 first-level classes of 32-byte granules reach blocks of 8 GiB (more than the
/// 1 GiB `memory_mb` allows), 32 second-level classes keep rounding waste under 3 %.
type Tlsf = rlsf::Tlsf<'static, u32, u32, 28, 32>;

/// Page size assumed when touching the pool (a larger real page is touched all the same).
const PAGE: usize = 4096;

/// Alignment of every block handed to Lua: at least Lua's `LUAI_MAXALIGN` (8 bytes on 64-bit targets),
/// and what `malloc` guarantees on x86-64 and aarch64.
const ALIGN: usize = 16;

/// The pool and its allocator. Lives at a fixed address (boxed) because Lua keeps a pointer to it.
pub(super) struct Arena {
    tlsf: Tlsf,
    pool: NonNull<u8>,
    layout: Layout,
    /// Bytes Lua holds now (as Lua asked for them; TLSF's headers and rounding not counted).
    used: usize,
}

impl Arena {
    /// A pool of `size` bytes, every page written once; `None` when the system refuses the memory.
    pub(super) fn new(size: usize) -> Option<Box<Arena>> {
        let layout = Layout::from_size_align(size.max(PAGE), PAGE).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let pool = NonNull::new(unsafe { std::alloc::alloc(layout) })?;
        for offset in (0..layout.size()).step_by(PAGE) {
            // SAFETY: `offset` is inside the block just allocated. A volatile write (not a memset the
            // compiler could turn into `calloc`) makes the kernel back every page now, not on first use.
            unsafe { pool.as_ptr().add(offset).write_volatile(0) };
        }
        let mut arena = Box::new(Arena {
            tlsf: Tlsf::new(),
            pool,
            layout,
            used: 0,
        });
        // SAFETY: the pool is owned by the arena and freed only in its `Drop`, after the TLSF (a field of
        // the same struct) is last used; nothing else touches it.
        unsafe {
            arena
                .tlsf
                .insert_free_block_ptr(NonNull::slice_from_raw_parts(pool, layout.size()))
        }?;
        Some(arena)
    }

    /// Bytes Lua holds now.
    pub(super) fn used(&self) -> usize {
        self.used
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the Lua state using it was closed before (the
        // owner closes the state first, see `vm::Vm::drop`).
        unsafe { std::alloc::dealloc(self.pool.as_ptr(), self.layout) };
    }
}

/// The `lua_Alloc` of a script's state: `ud` is its [`Arena`]. Follows the contract of the Lua manual
/// (§4.6): `nsize == 0` frees and returns null; otherwise allocates or resizes and returns null only when
/// it cannot, leaving the old block untouched. Never touches the process heap; never unwinds.
pub(super) unsafe extern "C" fn lua_alloc(
    ud: *mut c_void,
    ptr: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: `ud` is the arena given to `lua_newstate`, alive as long as the state, and only this
    // state's thread uses it while Lua runs.
    let arena = unsafe { &mut *ud.cast::<Arena>() };
    let old = NonNull::new(ptr.cast::<u8>());
    match (old, nsize) {
        (None, 0) => std::ptr::null_mut(),
        (Some(block), 0) => {
            // SAFETY: `block` came from this TLSF with `ALIGN` (every block here does).
            unsafe { arena.tlsf.deallocate(block, ALIGN) };
            arena.used -= osize;
            std::ptr::null_mut()
        }
        (old, _) => {
            let Ok(layout) = Layout::from_size_align(nsize, ALIGN) else {
                return std::ptr::null_mut();
            };
            let new = match old {
                None => arena.tlsf.allocate(layout),
                // SAFETY: `block` came from this TLSF with `ALIGN`; on failure it is left as it was.
                Some(block) => unsafe { arena.tlsf.reallocate(block, layout) },
            };
            match new {
                Some(new) => {
                    // With no old block, `osize` is a type tag, not a size.
                    arena.used = arena.used - old.map_or(0, |_| osize) + nsize;
                    new.as_ptr().cast()
                }
                None => std::ptr::null_mut(),
            }
        }
    }
}
