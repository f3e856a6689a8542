//! The few pieces of the kernel's V4L2 user-space API (`<linux/videodev2.h>`) that reflex streams with,
//! written by hand: `#[repr(C)]` structs, ioctl numbers and flags, and safe wrappers for `ioctl`, `poll`
//! and `mmap`.
//!
//! Written by hand rather than generated (the `v4l` crate's `v4l2-sys-mit` runs bindgen, which needs
//! libclang on the build machine). The test at the bottom compiles a C program against the system's
//! `<linux/videodev2.h>` and checks every size, field offset, ioctl number and constant used here against
//! it. Unions are written as a struct holding the one member reflex uses plus padding up to the union's
//! size (and a zero-length `c_ulong` array where the C union holds a pointer or an `unsigned long`, for its
//! alignment), so no field read needs `unsafe`.
//!
//! Names are the kernel's, so each item can be looked up in the header and its documentation
//! (Documentation/userspace-api/media/v4l/).

#![allow(non_camel_case_types)] // reason: the kernel's UAPI names, checked against the header by name
#![allow(dead_code)] // reason: mirrors of the kernel's structs and flags: fields reflex does not read keep the layout

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use libc::{c_int, c_ulong};

/// `V4L2_BUF_TYPE_VIDEO_CAPTURE`: single-planar video capture.
pub(crate) const V4L2_BUF_TYPE_VIDEO_CAPTURE: u32 = 1;
/// `V4L2_MEMORY_MMAP`: driver-allocated buffers mapped into the process.
pub(crate) const V4L2_MEMORY_MMAP: u32 = 1;
/// `V4L2_FIELD_NONE`: progressive frames.
pub(crate) const V4L2_FIELD_NONE: u32 = 1;

/// `V4L2_CAP_VIDEO_CAPTURE`: single-planar video capture.
pub(crate) const V4L2_CAP_VIDEO_CAPTURE: u32 = 0x0000_0001;
/// `V4L2_CAP_VIDEO_OUTPUT`.
pub(crate) const V4L2_CAP_VIDEO_OUTPUT: u32 = 0x0000_0002;
/// `V4L2_CAP_VIDEO_CAPTURE_MPLANE`: multi-planar capture (not supported by reflex).
pub(crate) const V4L2_CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
/// `V4L2_CAP_VIDEO_M2M`: a memory-to-memory device (codec, scaler).
pub(crate) const V4L2_CAP_VIDEO_M2M: u32 = 0x0000_8000;
/// `V4L2_CAP_VIDEO_M2M_MPLANE`.
pub(crate) const V4L2_CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
/// `V4L2_CAP_META_CAPTURE`: a metadata node (UVC cameras' second node).
pub(crate) const V4L2_CAP_META_CAPTURE: u32 = 0x0080_0000;
/// `V4L2_CAP_READWRITE`: `read()` I/O.
pub(crate) const V4L2_CAP_READWRITE: u32 = 0x0100_0000;
/// `V4L2_CAP_STREAMING`: the streaming I/O ioctls (what reflex uses).
pub(crate) const V4L2_CAP_STREAMING: u32 = 0x0400_0000;
/// `V4L2_CAP_DEVICE_CAPS`: `device_caps` describes this node (`capabilities` the whole device).
pub(crate) const V4L2_CAP_DEVICE_CAPS: u32 = 0x8000_0000;

/// `V4L2_CAP_TIMEPERFRAME` (in `v4l2_captureparm.capability`): the frame interval can be set.
pub(crate) const V4L2_CAP_TIMEPERFRAME: u32 = 0x1000;

/// `V4L2_BUF_FLAG_ERROR`: the buffer was dequeued but its data may be corrupt.
pub(crate) const V4L2_BUF_FLAG_ERROR: u32 = 0x0000_0040;
/// `V4L2_BUF_FLAG_TIMESTAMP_MASK`: which clock the timestamp is on.
pub(crate) const V4L2_BUF_FLAG_TIMESTAMP_MASK: u32 = 0x0000_e000;
/// `V4L2_BUF_FLAG_TIMESTAMP_UNKNOWN`: the timestamp's clock is not known.
pub(crate) const V4L2_BUF_FLAG_TIMESTAMP_UNKNOWN: u32 = 0x0000_0000;
/// `V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC`: `CLOCK_MONOTONIC`, the host clock reflex stamps with.
pub(crate) const V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC: u32 = 0x0000_2000;
/// `V4L2_BUF_FLAG_TIMESTAMP_COPY`: copied from an output buffer (memory-to-memory devices).
pub(crate) const V4L2_BUF_FLAG_TIMESTAMP_COPY: u32 = 0x0000_4000;
/// `V4L2_BUF_FLAG_TSTAMP_SRC_MASK`: when in the frame's life the timestamp was taken.
pub(crate) const V4L2_BUF_FLAG_TSTAMP_SRC_MASK: u32 = 0x0007_0000;
/// `V4L2_BUF_FLAG_TSTAMP_SRC_EOF` (0, so also what a driver that says nothing means): when the last
/// pixel was received.
pub(crate) const V4L2_BUF_FLAG_TSTAMP_SRC_EOF: u32 = 0x0000_0000;
/// `V4L2_BUF_FLAG_TSTAMP_SRC_SOE`: at the start of exposure.
pub(crate) const V4L2_BUF_FLAG_TSTAMP_SRC_SOE: u32 = 0x0001_0000;

/// `V4L2_FRMSIZE_TYPE_DISCRETE`.
pub(crate) const V4L2_FRMSIZE_TYPE_DISCRETE: u32 = 1;
/// `V4L2_FRMSIZE_TYPE_CONTINUOUS`.
pub(crate) const V4L2_FRMSIZE_TYPE_CONTINUOUS: u32 = 2;
/// `V4L2_FRMSIZE_TYPE_STEPWISE`.
pub(crate) const V4L2_FRMSIZE_TYPE_STEPWISE: u32 = 3;
/// `V4L2_FRMIVAL_TYPE_DISCRETE`.
pub(crate) const V4L2_FRMIVAL_TYPE_DISCRETE: u32 = 1;
/// `V4L2_FRMIVAL_TYPE_CONTINUOUS`.
pub(crate) const V4L2_FRMIVAL_TYPE_CONTINUOUS: u32 = 2;
/// `V4L2_FRMIVAL_TYPE_STEPWISE`.
pub(crate) const V4L2_FRMIVAL_TYPE_STEPWISE: u32 = 3;

/// `V4L2_CID_EXPOSURE_ABSOLUTE`: exposure time in units of 100 µs (UVC's control).
pub(crate) const V4L2_CID_EXPOSURE_ABSOLUTE: u32 = 0x009a_0902;

/// `struct v4l2_capability` (`VIDIOC_QUERYCAP`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct v4l2_capability {
    pub driver: [u8; 16],
    pub card: [u8; 32],
    pub bus_info: [u8; 32],
    pub version: u32,
    pub capabilities: u32,
    pub device_caps: u32,
    pub reserved: [u32; 3],
}

/// `struct v4l2_fmtdesc` (`VIDIOC_ENUM_FMT`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct v4l2_fmtdesc {
    pub index: u32,
    pub type_: u32,
    pub flags: u32,
    pub description: [u8; 32],
    pub pixelformat: u32,
    pub mbus_code: u32,
    pub reserved: [u32; 3],
}

/// `struct v4l2_frmsizeenum` (`VIDIOC_ENUM_FRAMESIZES`). The union is `u`: discrete `[width, height]`, or
/// stepwise `[min_width, max_width, step_width, min_height, max_height, step_height]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct v4l2_frmsizeenum {
    pub index: u32,
    pub pixel_format: u32,
    pub type_: u32,
    pub u: [u32; 6],
    pub reserved: [u32; 2],
}

/// `struct v4l2_frmivalenum` (`VIDIOC_ENUM_FRAMEINTERVALS`). The union is `u`: discrete `[num, den]`, or
/// stepwise `[min.num, min.den, max.num, max.den, step.num, step.den]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct v4l2_frmivalenum {
    pub index: u32,
    pub pixel_format: u32,
    pub width: u32,
    pub height: u32,
    pub type_: u32,
    pub u: [u32; 6],
    pub reserved: [u32; 2],
}

/// `struct v4l2_pix_format` (single-planar image format).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct v4l2_pix_format {
    pub width: u32,
    pub height: u32,
    pub pixelformat: u32,
    pub field: u32,
    pub bytesperline: u32,
    pub sizeimage: u32,
    pub colorspace: u32,
    pub priv_: u32,
    pub flags: u32,
    pub ycbcr_enc: u32,
    pub quantization: u32,
    pub xfer_func: u32,
}

/// `struct v4l2_format` (`VIDIOC_G_FMT`, `VIDIOC_S_FMT`) with its `fmt` union as `pix` (capture) plus
/// padding to the union's 200 bytes; the union holds pointers (`struct v4l2_window`), hence its alignment.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct v4l2_format {
    pub type_: u32,
    _align: [c_ulong; 0],
    pub pix: v4l2_pix_format,
    _rest: [u8; 200 - size_of::<v4l2_pix_format>()],
}

impl v4l2_format {
    /// A zeroed format of `type_`.
    pub fn new(type_: u32) -> Self {
        Self {
            type_,
            _align: [],
            pix: v4l2_pix_format::default(),
            _rest: [0; 200 - size_of::<v4l2_pix_format>()],
        }
    }
}

/// `struct v4l2_fract`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct v4l2_fract {
    pub numerator: u32,
    pub denominator: u32,
}

/// `struct v4l2_captureparm`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct v4l2_captureparm {
    pub capability: u32,
    pub capturemode: u32,
    pub timeperframe: v4l2_fract,
    pub extendedmode: u32,
    pub readbuffers: u32,
    pub reserved: [u32; 4],
}

/// `struct v4l2_streamparm` (`VIDIOC_G_PARM`, `VIDIOC_S_PARM`) with its `parm` union as `capture` plus
/// padding to the union's 200 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct v4l2_streamparm {
    pub type_: u32,
    pub capture: v4l2_captureparm,
    _rest: [u8; 200 - size_of::<v4l2_captureparm>()],
}

impl v4l2_streamparm {
    /// A zeroed parameter block of `type_`.
    pub fn new(type_: u32) -> Self {
        Self {
            type_,
            capture: v4l2_captureparm::default(),
            _rest: [0; 200 - size_of::<v4l2_captureparm>()],
        }
    }
}

/// `struct v4l2_requestbuffers` (`VIDIOC_REQBUFS`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct v4l2_requestbuffers {
    pub count: u32,
    pub type_: u32,
    pub memory: u32,
    pub capabilities: u32,
    pub flags: u8,
    pub reserved: [u8; 3],
}

/// `struct v4l2_timecode`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct v4l2_timecode {
    pub type_: u32,
    pub flags: u32,
    pub frames: u8,
    pub seconds: u8,
    pub minutes: u8,
    pub hours: u8,
    pub userbits: [u8; 4],
}

/// `struct v4l2_buffer` (`VIDIOC_QUERYBUF`, `VIDIOC_QBUF`, `VIDIOC_DQBUF`) with its `m` union as `offset`
/// (mmap I/O) padded to the union's size (an `unsigned long` or a pointer), and the trailing union as
/// `request_fd`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct v4l2_buffer {
    pub index: u32,
    pub type_: u32,
    pub bytesused: u32,
    pub flags: u32,
    pub field: u32,
    pub timestamp: libc::timeval,
    pub timecode: v4l2_timecode,
    pub sequence: u32,
    pub memory: u32,
    _m_align: [c_ulong; 0],
    pub offset: u32,
    _m_rest: [u8; size_of::<c_ulong>() - size_of::<u32>()],
    pub length: u32,
    pub reserved2: u32,
    pub request_fd: i32,
}

impl v4l2_buffer {
    /// A zeroed mmap capture buffer descriptor for buffer `index`.
    pub fn new(index: u32) -> Self {
        Self {
            index,
            type_: V4L2_BUF_TYPE_VIDEO_CAPTURE,
            bytesused: 0,
            flags: 0,
            field: 0,
            timestamp: libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
            timecode: v4l2_timecode::default(),
            sequence: 0,
            memory: V4L2_MEMORY_MMAP,
            _m_align: [],
            offset: 0,
            _m_rest: [0; size_of::<c_ulong>() - size_of::<u32>()],
            length: 0,
            reserved2: 0,
            request_fd: 0,
        }
    }

    /// The timestamp in ns (negative fields, which no driver writes, count as 0).
    pub fn timestamp_ns(&self) -> u64 {
        let s = u64::try_from(self.timestamp.tv_sec).unwrap_or(0);
        let us = u64::try_from(self.timestamp.tv_usec).unwrap_or(0);
        s * 1_000_000_000 + us * 1_000
    }
}

/// `struct v4l2_control` (`VIDIOC_G_CTRL`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct v4l2_control {
    pub id: u32,
    pub value: i32,
}

/// One ioctl request, typed by the struct it reads or writes, so [`ioctl`] can only be called with the
/// argument the kernel expects.
#[derive(Debug)]
pub(crate) struct Ioctl<T> {
    /// The request number (`_IOR`, `_IOW`, `_IOWR` of `'V'`, the number and the struct's size).
    pub request: c_ulong,
    /// Its name, for error messages.
    pub name: &'static str,
    _arg: PhantomData<fn(&mut T)>,
}

// `_IOC` as <asm-generic/ioctl.h> defines it (x86, ARM, RISC-V, ...); PowerPC, MIPS and SPARC use 3 bits of
// direction (read 2, write 4) and 13 of size.
#[cfg(not(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
)))]
mod ioc {
    pub const WRITE: u64 = 1;
    pub const READ: u64 = 2;
    pub const DIR_SHIFT: u64 = 30;
}
#[cfg(any(
    target_arch = "powerpc",
    target_arch = "powerpc64",
    target_arch = "mips",
    target_arch = "mips64",
    target_arch = "sparc",
    target_arch = "sparc64"
))]
mod ioc {
    pub const WRITE: u64 = 4;
    pub const READ: u64 = 2;
    pub const DIR_SHIFT: u64 = 29;
}

impl<T> Ioctl<T> {
    const fn new(dir: u64, nr: u64, name: &'static str) -> Self {
        let request =
            (dir << ioc::DIR_SHIFT) | ((size_of::<T>() as u64) << 16) | (b'V' as u64) << 8 | nr;
        Self {
            request: request as c_ulong,
            name,
            _arg: PhantomData,
        }
    }
    const fn read(nr: u64, name: &'static str) -> Self {
        Self::new(ioc::READ, nr, name)
    }
    const fn write(nr: u64, name: &'static str) -> Self {
        Self::new(ioc::WRITE, nr, name)
    }
    const fn read_write(nr: u64, name: &'static str) -> Self {
        Self::new(ioc::READ | ioc::WRITE, nr, name)
    }
}

/// `VIDIOC_QUERYCAP`.
pub(crate) const VIDIOC_QUERYCAP: Ioctl<v4l2_capability> = Ioctl::read(0, "VIDIOC_QUERYCAP");
/// `VIDIOC_ENUM_FMT`.
pub(crate) const VIDIOC_ENUM_FMT: Ioctl<v4l2_fmtdesc> = Ioctl::read_write(2, "VIDIOC_ENUM_FMT");
/// `VIDIOC_G_FMT`.
pub(crate) const VIDIOC_G_FMT: Ioctl<v4l2_format> = Ioctl::read_write(4, "VIDIOC_G_FMT");
/// `VIDIOC_S_FMT`.
pub(crate) const VIDIOC_S_FMT: Ioctl<v4l2_format> = Ioctl::read_write(5, "VIDIOC_S_FMT");
/// `VIDIOC_REQBUFS`.
pub(crate) const VIDIOC_REQBUFS: Ioctl<v4l2_requestbuffers> =
    Ioctl::read_write(8, "VIDIOC_REQBUFS");
/// `VIDIOC_QUERYBUF`.
pub(crate) const VIDIOC_QUERYBUF: Ioctl<v4l2_buffer> = Ioctl::read_write(9, "VIDIOC_QUERYBUF");
/// `VIDIOC_QBUF`.
pub(crate) const VIDIOC_QBUF: Ioctl<v4l2_buffer> = Ioctl::read_write(15, "VIDIOC_QBUF");
/// `VIDIOC_DQBUF`.
pub(crate) const VIDIOC_DQBUF: Ioctl<v4l2_buffer> = Ioctl::read_write(17, "VIDIOC_DQBUF");
/// `VIDIOC_STREAMON` (argument: the buffer type).
pub(crate) const VIDIOC_STREAMON: Ioctl<c_int> = Ioctl::write(18, "VIDIOC_STREAMON");
/// `VIDIOC_STREAMOFF` (argument: the buffer type).
pub(crate) const VIDIOC_STREAMOFF: Ioctl<c_int> = Ioctl::write(19, "VIDIOC_STREAMOFF");
/// `VIDIOC_G_PARM`.
pub(crate) const VIDIOC_G_PARM: Ioctl<v4l2_streamparm> = Ioctl::read_write(21, "VIDIOC_G_PARM");
/// `VIDIOC_S_PARM`.
pub(crate) const VIDIOC_S_PARM: Ioctl<v4l2_streamparm> = Ioctl::read_write(22, "VIDIOC_S_PARM");
/// `VIDIOC_G_CTRL`.
pub(crate) const VIDIOC_G_CTRL: Ioctl<v4l2_control> = Ioctl::read_write(27, "VIDIOC_G_CTRL");
/// `VIDIOC_ENUM_FRAMESIZES`.
pub(crate) const VIDIOC_ENUM_FRAMESIZES: Ioctl<v4l2_frmsizeenum> =
    Ioctl::read_write(74, "VIDIOC_ENUM_FRAMESIZES");
/// `VIDIOC_ENUM_FRAMEINTERVALS`.
pub(crate) const VIDIOC_ENUM_FRAMEINTERVALS: Ioctl<v4l2_frmivalenum> =
    Ioctl::read_write(75, "VIDIOC_ENUM_FRAMEINTERVALS");

/// Calls `ioctl(fd, request, arg)`, again when a signal interrupted it (`EINTR`).
pub(crate) fn ioctl<T>(fd: BorrowedFd<'_>, request: &Ioctl<T>, arg: &mut T) -> io::Result<()> {
    loop {
        // reason for allowing unsafe: FFI to ioctl, the only way to talk to a V4L2 driver.
        // SAFETY: `request` is typed by `T`: its number encodes `size_of::<T>()`, and every `T` used here is
        // a `#[repr(C)]` mirror of the kernel's struct, checked against <linux/videodev2.h> by the test
        // below; `arg` is a valid, exclusive pointer to one `T` for the duration of the call, and `fd` is
        // open.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                request.request as _,
                std::ptr::from_mut(arg).cast::<libc::c_void>(),
            )
        };
        if rc != -1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// What [`poll_in`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollResult {
    /// A buffer is ready to dequeue (`POLLIN`).
    Ready,
    /// Nothing within the timeout.
    Timeout,
    /// `POLLERR`/`POLLHUP`/`POLLNVAL` without `POLLIN`: the stream is broken (unplugged, streaming
    /// stopped); `VIDIOC_DQBUF` says why.
    Error,
}

/// Waits up to `timeout_ms` for `fd` to be readable; an interrupted wait is resumed with the full timeout.
pub(crate) fn poll_in(fd: BorrowedFd<'_>, timeout_ms: i32) -> io::Result<PollResult> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // reason for allowing unsafe: FFI to poll, the way to wait for a V4L2 buffer without busy-waiting.
        // SAFETY: `pfd` is one valid, writable pollfd, and the count passed is 1.
        #[allow(unsafe_code)]
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        match rc {
            0 => return Ok(PollResult::Timeout),
            n if n > 0 => {
                return Ok(if pfd.revents & libc::POLLIN != 0 {
                    PollResult::Ready
                } else {
                    PollResult::Error
                });
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
        }
    }
}

/// One driver buffer mapped into the process (`mmap` of the offset `VIDIOC_QUERYBUF` gave), unmapped on
/// drop. Read only while the buffer is dequeued: while queued, the driver writes into it.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// reason for allowing unsafe: a mapping is plain memory owned by this value; moving it to the capture thread
// is as safe as moving a `Vec<u8>`.
// SAFETY: the pointer is only dereferenced through `&self` (reads) and unmapped once, in `drop`.
#[allow(unsafe_code)]
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of the buffer at `offset` of `fd`, shared, readable and writable (V4L2's example
    /// mapping; some older drivers refuse a read-only one).
    pub fn new(fd: BorrowedFd<'_>, len: usize, offset: u32) -> io::Result<Self> {
        if len == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the driver gave a buffer of 0 bytes",
            ));
        }
        #[allow(clippy::unnecessary_fallible_conversions)] // reason: off_t is i32 on 32-bit targets
        let offset = libc::off_t::try_from(offset).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidData, "buffer offset beyond off_t")
        })?;
        // reason for allowing unsafe: FFI to mmap, how V4L2 hands its buffers to user space.
        // SAFETY: a fresh mapping at an address of the kernel's choosing (null hint), so nothing of ours is
        // overwritten; the result is checked against MAP_FAILED.
        #[allow(unsafe_code)]
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null pointer"))?;
        Ok(Self { ptr, len })
    }

    /// The mapped bytes.
    pub fn bytes(&self) -> &[u8] {
        // reason for allowing unsafe: viewing the mapping as a slice, the point of mapping it.
        // SAFETY: `ptr` is a live mapping of `len` readable bytes until `drop`; the borrow of `self` keeps
        // it alive. The driver writes into it only while the buffer is queued, and the stream code reads a
        // buffer only between VIDIOC_DQBUF and VIDIOC_QBUF.
        #[allow(unsafe_code)]
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr(), self.len)
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // reason for allowing unsafe: FFI to munmap, releasing the mapping made in `new`.
        // SAFETY: `ptr`/`len` are exactly what mmap returned and were never unmapped before.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A NUL-padded byte string from a UAPI struct as text.
pub(crate) fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// Every size, offset, ioctl number and constant used above, as (the C expression, the Rust value).
    fn expected() -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = Vec::new();
        let mut size = |s: &str, n: usize| v.push((format!("sizeof(struct {s})"), n as u64));
        size("v4l2_capability", size_of::<v4l2_capability>());
        size("v4l2_fmtdesc", size_of::<v4l2_fmtdesc>());
        size("v4l2_frmsizeenum", size_of::<v4l2_frmsizeenum>());
        size("v4l2_frmivalenum", size_of::<v4l2_frmivalenum>());
        size("v4l2_pix_format", size_of::<v4l2_pix_format>());
        size("v4l2_format", size_of::<v4l2_format>());
        size("v4l2_fract", size_of::<v4l2_fract>());
        size("v4l2_captureparm", size_of::<v4l2_captureparm>());
        size("v4l2_streamparm", size_of::<v4l2_streamparm>());
        size("v4l2_requestbuffers", size_of::<v4l2_requestbuffers>());
        size("v4l2_timecode", size_of::<v4l2_timecode>());
        size("v4l2_buffer", size_of::<v4l2_buffer>());
        size("v4l2_control", size_of::<v4l2_control>());
        macro_rules! off {
            ($s:ident, $f:ident) => {
                off!($s, stringify!($f), offset_of!($s, $f))
            };
            ($s:ident, $c:expr, $r:expr) => {
                v.push((
                    format!("offsetof(struct {}, {})", stringify!($s), $c),
                    $r as u64,
                ))
            };
        }
        off!(v4l2_capability, driver);
        off!(v4l2_capability, card);
        off!(v4l2_capability, bus_info);
        off!(v4l2_capability, version);
        off!(v4l2_capability, capabilities);
        off!(v4l2_capability, device_caps);
        off!(v4l2_fmtdesc, index);
        off!(v4l2_fmtdesc, "type", offset_of!(v4l2_fmtdesc, type_));
        off!(v4l2_fmtdesc, flags);
        off!(v4l2_fmtdesc, description);
        off!(v4l2_fmtdesc, pixelformat);
        let fs = offset_of!(v4l2_frmsizeenum, u);
        off!(v4l2_frmsizeenum, index);
        off!(v4l2_frmsizeenum, pixel_format);
        off!(
            v4l2_frmsizeenum,
            "type",
            offset_of!(v4l2_frmsizeenum, type_)
        );
        off!(v4l2_frmsizeenum, "discrete.width", fs);
        off!(v4l2_frmsizeenum, "discrete.height", fs + 4);
        for (i, f) in [
            "min_width",
            "max_width",
            "step_width",
            "min_height",
            "max_height",
            "step_height",
        ]
        .iter()
        .enumerate()
        {
            v.push((
                format!("offsetof(struct v4l2_frmsizeenum, stepwise.{f})"),
                (fs + 4 * i) as u64,
            ));
        }
        off!(v4l2_frmsizeenum, reserved);
        let fi = offset_of!(v4l2_frmivalenum, u);
        off!(v4l2_frmivalenum, index);
        off!(v4l2_frmivalenum, pixel_format);
        off!(v4l2_frmivalenum, width);
        off!(v4l2_frmivalenum, height);
        off!(
            v4l2_frmivalenum,
            "type",
            offset_of!(v4l2_frmivalenum, type_)
        );
        off!(v4l2_frmivalenum, "discrete.numerator", fi);
        off!(v4l2_frmivalenum, "discrete.denominator", fi + 4);
        for (i, f) in [
            "min.numerator",
            "min.denominator",
            "max.numerator",
            "max.denominator",
            "step.numerator",
            "step.denominator",
        ]
        .iter()
        .enumerate()
        {
            v.push((
                format!("offsetof(struct v4l2_frmivalenum, stepwise.{f})"),
                (fi + 4 * i) as u64,
            ));
        }
        off!(v4l2_frmivalenum, reserved);
        off!(v4l2_pix_format, width);
        off!(v4l2_pix_format, height);
        off!(v4l2_pix_format, pixelformat);
        off!(v4l2_pix_format, field);
        off!(v4l2_pix_format, bytesperline);
        off!(v4l2_pix_format, sizeimage);
        off!(v4l2_pix_format, quantization);
        off!(v4l2_pix_format, xfer_func);
        off!(v4l2_format, "type", offset_of!(v4l2_format, type_));
        off!(v4l2_format, "fmt.pix", offset_of!(v4l2_format, pix));
        off!(v4l2_fract, numerator);
        off!(v4l2_fract, denominator);
        off!(v4l2_captureparm, capability);
        off!(v4l2_captureparm, timeperframe);
        off!(v4l2_captureparm, readbuffers);
        off!(v4l2_streamparm, "type", offset_of!(v4l2_streamparm, type_));
        off!(
            v4l2_streamparm,
            "parm.capture",
            offset_of!(v4l2_streamparm, capture)
        );
        off!(v4l2_requestbuffers, count);
        off!(
            v4l2_requestbuffers,
            "type",
            offset_of!(v4l2_requestbuffers, type_)
        );
        off!(v4l2_requestbuffers, memory);
        off!(v4l2_requestbuffers, capabilities);
        off!(v4l2_requestbuffers, flags);
        off!(v4l2_buffer, index);
        off!(v4l2_buffer, "type", offset_of!(v4l2_buffer, type_));
        off!(v4l2_buffer, bytesused);
        off!(v4l2_buffer, flags);
        off!(v4l2_buffer, field);
        off!(v4l2_buffer, timestamp);
        off!(
            v4l2_buffer,
            "timestamp.tv_usec",
            offset_of!(v4l2_buffer, timestamp) + offset_of!(libc::timeval, tv_usec)
        );
        off!(v4l2_buffer, timecode);
        off!(v4l2_buffer, sequence);
        off!(v4l2_buffer, memory);
        off!(v4l2_buffer, "m.offset", offset_of!(v4l2_buffer, offset));
        off!(v4l2_buffer, length);
        off!(v4l2_buffer, reserved2);
        off!(v4l2_buffer, request_fd);
        off!(v4l2_control, id);
        off!(v4l2_control, value);

        for (name, n) in [
            ("VIDIOC_QUERYCAP", VIDIOC_QUERYCAP.request),
            ("VIDIOC_ENUM_FMT", VIDIOC_ENUM_FMT.request),
            ("VIDIOC_G_FMT", VIDIOC_G_FMT.request),
            ("VIDIOC_S_FMT", VIDIOC_S_FMT.request),
            ("VIDIOC_REQBUFS", VIDIOC_REQBUFS.request),
            ("VIDIOC_QUERYBUF", VIDIOC_QUERYBUF.request),
            ("VIDIOC_QBUF", VIDIOC_QBUF.request),
            ("VIDIOC_DQBUF", VIDIOC_DQBUF.request),
            ("VIDIOC_STREAMON", VIDIOC_STREAMON.request),
            ("VIDIOC_STREAMOFF", VIDIOC_STREAMOFF.request),
            ("VIDIOC_G_PARM", VIDIOC_G_PARM.request),
            ("VIDIOC_S_PARM", VIDIOC_S_PARM.request),
            ("VIDIOC_G_CTRL", VIDIOC_G_CTRL.request),
            ("VIDIOC_ENUM_FRAMESIZES", VIDIOC_ENUM_FRAMESIZES.request),
            (
                "VIDIOC_ENUM_FRAMEINTERVALS",
                VIDIOC_ENUM_FRAMEINTERVALS.request,
            ),
        ] {
            #[allow(clippy::unnecessary_cast)] // reason: c_ulong is u32 on 32-bit targets
            v.push((name.to_string(), n as u64));
        }
        for (name, n) in [
            ("V4L2_BUF_TYPE_VIDEO_CAPTURE", V4L2_BUF_TYPE_VIDEO_CAPTURE),
            ("V4L2_MEMORY_MMAP", V4L2_MEMORY_MMAP),
            ("V4L2_FIELD_NONE", V4L2_FIELD_NONE),
            ("V4L2_CAP_VIDEO_CAPTURE", V4L2_CAP_VIDEO_CAPTURE),
            ("V4L2_CAP_VIDEO_OUTPUT", V4L2_CAP_VIDEO_OUTPUT),
            (
                "V4L2_CAP_VIDEO_CAPTURE_MPLANE",
                V4L2_CAP_VIDEO_CAPTURE_MPLANE,
            ),
            ("V4L2_CAP_VIDEO_M2M", V4L2_CAP_VIDEO_M2M),
            ("V4L2_CAP_VIDEO_M2M_MPLANE", V4L2_CAP_VIDEO_M2M_MPLANE),
            ("V4L2_CAP_META_CAPTURE", V4L2_CAP_META_CAPTURE),
            ("V4L2_CAP_READWRITE", V4L2_CAP_READWRITE),
            ("V4L2_CAP_STREAMING", V4L2_CAP_STREAMING),
            ("V4L2_CAP_DEVICE_CAPS", V4L2_CAP_DEVICE_CAPS),
            ("V4L2_CAP_TIMEPERFRAME", V4L2_CAP_TIMEPERFRAME),
            ("V4L2_BUF_FLAG_ERROR", V4L2_BUF_FLAG_ERROR),
            ("V4L2_BUF_FLAG_TIMESTAMP_MASK", V4L2_BUF_FLAG_TIMESTAMP_MASK),
            (
                "V4L2_BUF_FLAG_TIMESTAMP_UNKNOWN",
                V4L2_BUF_FLAG_TIMESTAMP_UNKNOWN,
            ),
            (
                "V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC",
                V4L2_BUF_FLAG_TIMESTAMP_MONOTONIC,
            ),
            ("V4L2_BUF_FLAG_TIMESTAMP_COPY", V4L2_BUF_FLAG_TIMESTAMP_COPY),
            (
                "V4L2_BUF_FLAG_TSTAMP_SRC_MASK",
                V4L2_BUF_FLAG_TSTAMP_SRC_MASK,
            ),
            ("V4L2_BUF_FLAG_TSTAMP_SRC_EOF", V4L2_BUF_FLAG_TSTAMP_SRC_EOF),
            ("V4L2_BUF_FLAG_TSTAMP_SRC_SOE", V4L2_BUF_FLAG_TSTAMP_SRC_SOE),
            ("V4L2_FRMSIZE_TYPE_DISCRETE", V4L2_FRMSIZE_TYPE_DISCRETE),
            ("V4L2_FRMSIZE_TYPE_CONTINUOUS", V4L2_FRMSIZE_TYPE_CONTINUOUS),
            ("V4L2_FRMSIZE_TYPE_STEPWISE", V4L2_FRMSIZE_TYPE_STEPWISE),
            ("V4L2_FRMIVAL_TYPE_DISCRETE", V4L2_FRMIVAL_TYPE_DISCRETE),
            ("V4L2_FRMIVAL_TYPE_CONTINUOUS", V4L2_FRMIVAL_TYPE_CONTINUOUS),
            ("V4L2_FRMIVAL_TYPE_STEPWISE", V4L2_FRMIVAL_TYPE_STEPWISE),
            ("V4L2_CID_EXPOSURE_ABSOLUTE", V4L2_CID_EXPOSURE_ABSOLUTE),
        ] {
            v.push((name.to_string(), u64::from(n)));
        }
        v
    }

    /// Compiles a C program that prints each expression of [`expected`] as the system's
    /// <linux/videodev2.h> defines it, runs it, and compares: every struct size, field offset, ioctl
    /// number and constant must be the kernel's.
    #[test]
    fn layout_and_numbers_match_the_kernel_header() {
        let want = expected();
        let mut c = String::from(
            "#include <stdio.h>\n#include <stddef.h>\n#include <linux/videodev2.h>\nint main(void) {\n",
        );
        for (expr, _) in &want {
            c.push_str(&format!(
                "  printf(\"%llu\\n\", (unsigned long long)({expr}));\n"
            ));
        }
        c.push_str("  return 0;\n}\n");
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("layout.c");
        let exe = tmp.path().join("layout");
        std::fs::write(&src, c).unwrap();
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let compiled = match std::process::Command::new(&cc)
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!(
                    "SKIPPED: no C compiler `{cc}` to check the V4L2 layout against <linux/videodev2.h>"
                );
                return;
            }
            Err(e) => panic!("running {cc}: {e}"),
        };
        assert!(
            compiled.status.success(),
            "{cc} failed (is linux-libc-dev installed?): {}",
            String::from_utf8_lossy(&compiled.stderr)
        );
        let out = std::process::Command::new(&exe).output().unwrap();
        let got: Vec<u64> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert_eq!(got.len(), want.len());
        let wrong: Vec<String> = want
            .iter()
            .zip(&got)
            .filter(|((_, rust), c)| rust != *c)
            .map(|((expr, rust), c)| format!("{expr}: C {c}, Rust {rust}"))
            .collect();
        assert!(
            wrong.is_empty(),
            "differs from the kernel header:\n{}",
            wrong.join("\n")
        );
        assert!(want.len() > 100, "{} checks", want.len());
    }

    #[test]
    fn timestamps_and_names_read_back() {
        let mut b = v4l2_buffer::new(3);
        b.timestamp.tv_sec = 12;
        b.timestamp.tv_usec = 345_678;
        assert_eq!(b.timestamp_ns(), 12_345_678_000);
        b.timestamp.tv_sec = -1;
        assert_eq!(b.timestamp_ns(), 345_678_000);
        assert_eq!(c_str(b"uvcvideo\0\0\0"), "uvcvideo");
        assert_eq!(c_str(b"full"), "full");
    }
}
