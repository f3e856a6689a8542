//! The few Aravis 0.8 C functions reflex uses, bound by hand and loaded at run time from
//! `libaravis-0.8.so.0` (with `libloading`), so that building reflex needs no system package and a rig
//! without a GenICam camera never loads it. GLib's `g_object_unref`, `g_error_free` and `g_free` are looked up
//! through the same handle: `dlsym` on a library handle also searches the libraries it depends on.
//!
//! All of reflex's unsafe code for Aravis lives here, behind owning types: [`Camera`], [`Stream`] and
//! [`Buffer`] each hold one GObject reference and drop it in `Drop`. Signatures are those of
//! `/usr/include/aravis-0.8/` (Aravis 0.8.26; every function used exists since 0.8.0).
//!
//! Ownership, as Aravis documents it: `arv_stream_push_buffer` takes the buffer (transfer full), the pops give
//! it back (transfer full); strings returned by getters belong to the camera's GenICam tree (copied at once);
//! `arv_camera_dup_*` arrays are ours to `g_free`, not their strings; a `GError` set by a call is ours to free.

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::ptr::NonNull;
use std::sync::{Mutex, OnceLock};

use libloading::Library;

/// The shared library loaded at run time (Debian/Ubuntu package `libaravis-0.8-0`).
pub const LIBRARY: &str = "libaravis-0.8.so.0";

/// `ARV_BUFFER_STATUS_SUCCESS`: the buffer holds a complete image.
pub const BUFFER_STATUS_SUCCESS: i32 = 0;

/// GLib's `GError`: domain, code and a message we copy before freeing it.
#[repr(C)]
struct GError {
    domain: u32,
    code: c_int,
    message: *const c_char,
}

type Err = *mut *mut GError;
type Ptr = *mut c_void;

/// Declares the function table: one field per C function, loaded by name.
macro_rules! api {
    ($($name:ident: fn($($arg:ty),*) $(-> $ret:ty)?;)*) => {
        /// Aravis's and GLib's functions, resolved once from [`LIBRARY`].
        struct Api {
            $($name: unsafe extern "C" fn($($arg),*) $(-> $ret)?,)*
            /// Keeps the library mapped for as long as the pointers above are used: for the process.
            _library: Library,
        }

        impl Api {
            #[allow(unsafe_code)]
            // reason: loading a shared library runs its initialisers, and symbols are typed by us; the types
            // are Aravis 0.8's and GLib's public signatures.
            fn load() -> Result<Self, String> {
                // SAFETY: libaravis's and GLib's initialisers have no preconditions; loading it is what an
                // Aravis program does at start.
                let library = unsafe { Library::new(LIBRARY) }.map_err(|_| {
                    format!("aravis: {LIBRARY} not found (Debian/Ubuntu: apt install libaravis-0.8-0)")
                })?;
                $(
                    // SAFETY: the symbol is the C function of that name, whose signature is the field's type.
                    let $name = *unsafe {
                        library.get::<unsafe extern "C" fn($($arg),*) $(-> $ret)?>(
                            concat!(stringify!($name), "\0").as_bytes(),
                        )
                    }
                    .map_err(|e| {
                        format!(
                            "aravis: {LIBRARY} lacks {} ({e}); reflex needs Aravis 0.8",
                            stringify!($name)
                        )
                    })?;
                )*
                Ok(Self { $($name,)* _library: library })
            }
        }
    };
}

api! {
    arv_update_device_list: fn();
    arv_get_n_devices: fn() -> c_uint;
    arv_get_device_id: fn(c_uint) -> *const c_char;
    arv_get_device_vendor: fn(c_uint) -> *const c_char;
    arv_get_device_model: fn(c_uint) -> *const c_char;
    arv_get_device_serial_nbr: fn(c_uint) -> *const c_char;
    arv_get_device_address: fn(c_uint) -> *const c_char;
    arv_get_device_protocol: fn(c_uint) -> *const c_char;
    arv_camera_new: fn(*const c_char, Err) -> Ptr;
    arv_camera_set_region: fn(Ptr, c_int, c_int, c_int, c_int, Err);
    arv_camera_get_region: fn(Ptr, *mut c_int, *mut c_int, *mut c_int, *mut c_int, Err);
    arv_camera_is_frame_rate_available: fn(Ptr, Err) -> c_int;
    arv_camera_set_frame_rate: fn(Ptr, f64, Err);
    arv_camera_get_frame_rate: fn(Ptr, Err) -> f64;
    arv_camera_is_exposure_time_available: fn(Ptr, Err) -> c_int;
    arv_camera_set_exposure_time: fn(Ptr, f64, Err);
    arv_camera_get_exposure_time: fn(Ptr, Err) -> f64;
    arv_camera_is_gain_available: fn(Ptr, Err) -> c_int;
    arv_camera_set_gain: fn(Ptr, f64, Err);
    arv_camera_get_gain: fn(Ptr, Err) -> f64;
    arv_camera_set_pixel_format_from_string: fn(Ptr, *const c_char, Err);
    arv_camera_get_pixel_format: fn(Ptr, Err) -> u32;
    arv_camera_dup_available_pixel_formats_as_strings: fn(Ptr, *mut c_uint, Err) -> *mut *const c_char;
    arv_camera_dup_available_enumerations_as_strings: fn(Ptr, *const c_char, *mut c_uint, Err) -> *mut *const c_char;
    arv_camera_is_feature_available: fn(Ptr, *const c_char, Err) -> c_int;
    arv_camera_set_string: fn(Ptr, *const c_char, *const c_char, Err);
    arv_camera_set_trigger: fn(Ptr, *const c_char, Err);
    arv_camera_clear_triggers: fn(Ptr, Err);
    arv_camera_get_payload: fn(Ptr, Err) -> c_uint;
    arv_camera_create_stream: fn(Ptr, Ptr, Ptr, Err) -> Ptr;
    arv_camera_start_acquisition: fn(Ptr, Err);
    arv_camera_stop_acquisition: fn(Ptr, Err);
    arv_buffer_new: fn(usize, Ptr) -> Ptr;
    arv_buffer_get_status: fn(Ptr) -> c_int;
    arv_buffer_get_image_data: fn(Ptr, *mut usize) -> *const c_void;
    arv_buffer_get_image_width: fn(Ptr) -> c_int;
    arv_buffer_get_image_height: fn(Ptr) -> c_int;
    arv_buffer_get_image_pixel_format: fn(Ptr) -> u32;
    arv_buffer_get_image_padding: fn(Ptr, *mut c_int, *mut c_int);
    arv_buffer_get_timestamp: fn(Ptr) -> u64;
    arv_buffer_get_system_timestamp: fn(Ptr) -> u64;
    arv_buffer_get_frame_id: fn(Ptr) -> u64;
    arv_stream_push_buffer: fn(Ptr, Ptr);
    arv_stream_try_pop_buffer: fn(Ptr) -> Ptr;
    arv_stream_timeout_pop_buffer: fn(Ptr, u64) -> Ptr;
    arv_stream_get_statistics: fn(Ptr, *mut u64, *mut u64, *mut u64);
    g_object_unref: fn(Ptr);
    g_error_free: fn(*mut GError);
    g_free: fn(Ptr);
}

/// The loaded library, or why it could not be loaded (the same message every time).
fn api() -> Result<&'static Api, String> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(Api::load).as_ref().map_err(Clone::clone)
}

/// Whether libaravis loads, and if not, why (a message naming the package to install).
pub fn load() -> Result<(), String> {
    api().map(|_| ())
}

/// Serialises device discovery and opening: Aravis locks each call, but the list's indices only hold from
/// one `arv_update_device_list` to the next.
static SYSTEM: Mutex<()> = Mutex::new(());

/// One GenICam device as Aravis's discovery lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Aravis's device id (`Vendor-Model-Serial` for GigE Vision), what `[source.aravis] camera` takes.
    pub id: String,
    /// Vendor name.
    pub vendor: String,
    /// Model name.
    pub model: String,
    /// Serial number.
    pub serial: String,
    /// Address: the IP address of a GigE Vision camera, the bus id of a USB3 Vision one.
    pub address: String,
    /// `GigEVision`, `USB3Vision` or `Fake`.
    pub protocol: String,
}

/// A C string owned by Aravis, copied; `-` for a null pointer.
///
/// # Safety
/// `s` is null or a NUL-terminated string alive for the call.
#[allow(unsafe_code)] // reason: reads a C string Aravis returned
unsafe fn copy_str(s: *const c_char) -> String {
    if s.is_null() {
        return "-".into();
    }
    // SAFETY: non-null, NUL-terminated and alive for the call (the caller's contract).
    unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned()
}

/// Runs `f` with a `GError**`; a set error becomes its message (and is freed).
#[allow(unsafe_code)] // reason: reads and frees the GError a C call may have set
fn checked<T>(api: &Api, f: impl FnOnce(Err) -> T) -> Result<T, String> {
    let mut error: *mut GError = std::ptr::null_mut();
    let value = f(&mut error);
    if error.is_null() {
        return Ok(value);
    }
    // SAFETY: a non-null GError set by the call is a valid GError we own; its message is a C string or null.
    let message = unsafe { copy_str((*error).message) };
    // SAFETY: freed once, by its owner.
    unsafe { (api.g_error_free)(error) };
    Err(message)
}

/// Discovers the GenICam devices reachable now (GigE Vision: a broadcast answered within about a second;
/// USB3 Vision: the USB bus).
#[allow(unsafe_code)] // reason: FFI to Aravis's device list; strings are copied while the list is locked
pub fn devices() -> Result<Vec<DeviceEntry>, String> {
    let api = api()?;
    let _system = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: no arguments; Aravis locks its device list itself.
    unsafe { (api.arv_update_device_list)() };
    // SAFETY: as above.
    let n = unsafe { (api.arv_get_n_devices)() };
    let mut list = Vec::with_capacity(n as usize);
    for i in 0..n {
        // SAFETY: `i` < n, the list unchanged since (SYSTEM held); each string is copied before the next call.
        list.push(unsafe {
            DeviceEntry {
                id: copy_str((api.arv_get_device_id)(i)),
                vendor: copy_str((api.arv_get_device_vendor)(i)),
                model: copy_str((api.arv_get_device_model)(i)),
                serial: copy_str((api.arv_get_device_serial_nbr)(i)),
                address: copy_str((api.arv_get_device_address)(i)),
                protocol: copy_str((api.arv_get_device_protocol)(i)),
            }
        });
    }
    Ok(list)
}

/// A `NULL`-terminated-or-counted array of strings from `arv_camera_dup_*`, copied and freed.
///
/// # Safety
/// `array` is null or holds `n` valid C strings, and is ours to `g_free`.
#[allow(unsafe_code)] // reason: copies and frees an array Aravis allocated for us
unsafe fn take_strings(api: &Api, array: *mut *const c_char, n: c_uint) -> Vec<String> {
    if array.is_null() {
        return Vec::new();
    }
    // SAFETY: `n` valid entries (the caller's contract).
    let out = (0..n as usize)
        .map(|i| unsafe { copy_str(*array.add(i)) })
        .collect();
    // SAFETY: the container is ours (transfer container); its strings are not.
    unsafe { (api.g_free)(array.cast()) };
    out
}

/// An open camera (`ArvCamera`): one reference, dropped in `Drop`.
pub struct Camera {
    ptr: NonNull<c_void>,
    api: &'static Api,
}

// SAFETY: an ArvCamera is a GObject (atomic reference count) used by one thread at a time: it is opened on
// the caller's thread and then moved, with its stream, to the capture thread.
#[allow(unsafe_code)] // reason: the pointer is only ever used by the thread that owns the `Camera`
unsafe impl Send for Camera {}

#[allow(unsafe_code)] // reason: FFI to ArvCamera; `ptr` is a live camera for as long as `self` exists
impl Camera {
    /// Opens a camera by Aravis's device id, serial number, user id, MAC or IP address.
    pub fn open(name: &str) -> Result<Self, String> {
        let api = api()?;
        let name =
            CString::new(name).map_err(|_| format!("camera name `{name}` contains a NUL byte"))?;
        let _system = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
        let ptr = checked(api, |err| {
            // SAFETY: `name` is a C string alive across the call.
            unsafe { (api.arv_camera_new)(name.as_ptr(), err) }
        })?;
        NonNull::new(ptr)
            .map(|ptr| Self { ptr, api })
            .ok_or_else(|| "no camera found".to_string())
    }

    fn cam(&self) -> Ptr {
        self.ptr.as_ptr()
    }

    /// Sets the region of interest (px); a negative offset or a non-positive size keeps the camera's.
    pub fn set_region(&self, x: i32, y: i32, width: i32, height: i32) -> Result<(), String> {
        let api = self.api;
        // SAFETY: a live camera, plain values.
        checked(api, |err| unsafe {
            (api.arv_camera_set_region)(self.cam(), x, y, width, height, err)
        })
    }

    /// The region of interest: `(x, y, width, height)` in px.
    pub fn region(&self) -> Result<(i32, i32, i32, i32), String> {
        let api = self.api;
        let (mut x, mut y, mut w, mut h) = (0, 0, 0, 0);
        // SAFETY: a live camera, four valid out-pointers.
        checked(api, |err| unsafe {
            (api.arv_camera_get_region)(self.cam(), &mut x, &mut y, &mut w, &mut h, err)
        })?;
        Ok((x, y, w, h))
    }

    /// Whether the camera has a frame-rate control Aravis knows.
    pub fn has_frame_rate(&self) -> bool {
        let api = self.api;
        // SAFETY: a live camera.
        checked(api, |err| unsafe {
            (api.arv_camera_is_frame_rate_available)(self.cam(), err)
        })
        .is_ok_and(|b| b != 0)
    }

    /// Sets the frame rate (frames/s); Aravis clamps it to the camera's bounds and turns triggers off.
    pub fn set_frame_rate(&self, fps: f64) -> Result<(), String> {
        let api = self.api;
        // SAFETY: a live camera, a plain value.
        checked(api, |err| unsafe {
            (api.arv_camera_set_frame_rate)(self.cam(), fps, err)
        })
    }

    /// The frame rate the camera is set to (frames/s).
    pub fn frame_rate(&self) -> Result<f64, String> {
        let api = self.api;
        // SAFETY: a live camera.
        checked(api, |err| unsafe {
            (api.arv_camera_get_frame_rate)(self.cam(), err)
        })
    }

    /// Whether the camera has an exposure-time control.
    pub fn has_exposure_time(&self) -> bool {
        let api = self.api;
        // SAFETY: a live camera.
        checked(api, |err| unsafe {
            (api.arv_camera_is_exposure_time_available)(self.cam(), err)
        })
        .is_ok_and(|b| b != 0)
    }

    /// Sets the exposure time (µs).
    pub fn set_exposure_time_us(&self, us: f64) -> Result<(), String> {
        let api = self.api;
        // SAFETY: a live camera, a plain value.
        checked(api, |err| unsafe {
            (api.arv_camera_set_exposure_time)(self.cam(), us, err)
        })
    }

    /// The exposure time (µs).
    pub fn exposure_time_us(&self) -> Result<f64, String> {
        let api = self.api;
        // SAFETY: a live camera.
        checked(api, |err| unsafe {
            (api.arv_camera_get_exposure_time)(self.cam(), err)
        })
    }

    /// Whether the camera has a gain control.
    pub fn has_gain(&self) -> bool {
        let api = self.api;
        // SAFETY: a live camera.
        checked(api, |err| unsafe {
            (api.arv_camera_is_gain_available)(self.cam(), err)
        })
        .is_ok_and(|b| b != 0)
    }

    /// Sets the gain: `Gain` (dB, GenICam SFNC) when the camera has it, else its raw gain (its own unit).
    pub fn set_gain(&self, gain: f64) -> Result<(), String> {
        let api = self.api;
        // SAFETY: a live camera, a plain value.
        checked(api, |err| unsafe {
            (api.arv_camera_set_gain)(self.cam(), gain, err)
        })
    }

    /// The gain, in the unit [`Camera::set_gain`] writes.
    pub fn gain(&self) -> Result<f64, String> {
        let api = self.api;
        // SAFETY: a live camera.
        checked(api, |err| unsafe {
            (api.arv_camera_get_gain)(self.cam(), err)
        })
    }

    /// Sets the pixel format by its GenICam name (`Mono8`, `BayerRG8`, …).
    pub fn set_pixel_format(&self, name: &str) -> Result<(), String> {
        let api = self.api;
        let c = CString::new(name).map_err(|_| format!("`{name}` contains a NUL byte"))?;
        // SAFETY: a live camera, a C string alive across the call.
        checked(api, |err| unsafe {
            (api.arv_camera_set_pixel_format_from_string)(self.cam(), c.as_ptr(), err)
        })
    }

    /// The pixel format's PFNC code (`ARV_PIXEL_FORMAT_*`).
    pub fn pixel_format(&self) -> Result<u32, String> {
        let api = self.api;
        // SAFETY: a live camera.
        checked(api, |err| unsafe {
            (api.arv_camera_get_pixel_format)(self.cam(), err)
        })
    }

    /// The pixel formats the camera offers, by GenICam name.
    pub fn pixel_formats(&self) -> Result<Vec<String>, String> {
        let api = self.api;
        let mut n: c_uint = 0;
        let array = checked(api, |err| {
            // SAFETY: a live camera, a valid out-pointer.
            unsafe {
                (api.arv_camera_dup_available_pixel_formats_as_strings)(self.cam(), &mut n, err)
            }
        })?;
        // SAFETY: Aravis returned `n` strings in a container that is ours.
        Ok(unsafe { take_strings(api, array, n) })
    }

    /// The entries of an enumeration feature (`TriggerSource`, …); empty when the camera lacks it.
    pub fn enumeration(&self, feature: &str) -> Result<Vec<String>, String> {
        let api = self.api;
        let c = CString::new(feature).map_err(|_| format!("`{feature}` contains a NUL byte"))?;
        let mut n: c_uint = 0;
        let array = checked(api, |err| {
            // SAFETY: a live camera, a C string and an out-pointer alive across the call.
            unsafe {
                (api.arv_camera_dup_available_enumerations_as_strings)(
                    self.cam(),
                    c.as_ptr(),
                    &mut n,
                    err,
                )
            }
        })?;
        // SAFETY: as in `pixel_formats`.
        Ok(unsafe { take_strings(api, array, n) })
    }

    /// Whether the camera has `feature` (and it is available now).
    pub fn has_feature(&self, feature: &str) -> bool {
        let api = self.api;
        let Ok(c) = CString::new(feature) else {
            return false;
        };
        // SAFETY: a live camera, a C string alive across the call.
        checked(api, |err| unsafe {
            (api.arv_camera_is_feature_available)(self.cam(), c.as_ptr(), err)
        })
        .is_ok_and(|b| b != 0)
    }

    /// Sets a string or enumeration feature.
    pub fn set_string(&self, feature: &str, value: &str) -> Result<(), String> {
        let api = self.api;
        let f = CString::new(feature).map_err(|_| format!("`{feature}` contains a NUL byte"))?;
        let v = CString::new(value).map_err(|_| format!("`{value}` contains a NUL byte"))?;
        // SAFETY: a live camera, two C strings alive across the call.
        checked(api, |err| unsafe {
            (api.arv_camera_set_string)(self.cam(), f.as_ptr(), v.as_ptr(), err)
        })
    }

    /// Hardware trigger: frame start on `source` (e.g. `Line1`), rising edge; every other trigger off.
    pub fn set_trigger(&self, source: &str) -> Result<(), String> {
        let api = self.api;
        let c = CString::new(source).map_err(|_| format!("`{source}` contains a NUL byte"))?;
        // SAFETY: a live camera, a C string alive across the call.
        checked(api, |err| unsafe {
            (api.arv_camera_set_trigger)(self.cam(), c.as_ptr(), err)
        })
    }

    /// Every trigger off: the camera free-runs at its frame rate.
    pub fn clear_triggers(&self) -> Result<(), String> {
        let api = self.api;
        // SAFETY: a live camera.
        checked(api, |err| unsafe {
            (api.arv_camera_clear_triggers)(self.cam(), err)
        })
    }

    /// Bytes of one frame's payload, for the buffers.
    pub fn payload_bytes(&self) -> Result<usize, String> {
        let api = self.api;
        // SAFETY: a live camera.
        checked(api, |err| unsafe {
            (api.arv_camera_get_payload)(self.cam(), err)
        })
        .map(|n| n as usize)
    }

    /// Makes the camera's stream (its receiving thread starts at once), without callback.
    pub fn create_stream(&self) -> Result<Stream, String> {
        let api = self.api;
        let ptr = checked(api, |err| {
            // SAFETY: a live camera; no callback and no user data.
            unsafe {
                (api.arv_camera_create_stream)(
                    self.cam(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    err,
                )
            }
        })?;
        NonNull::new(ptr)
            .map(|ptr| Stream { ptr, api })
            .ok_or_else(|| "the camera gave no stream".to_string())
    }

    /// Starts acquisition.
    pub fn start_acquisition(&self) -> Result<(), String> {
        let api = self.api;
        // SAFETY: a live camera.
        checked(api, |err| unsafe {
            (api.arv_camera_start_acquisition)(self.cam(), err)
        })
    }

    /// Stops acquisition.
    pub fn stop_acquisition(&self) -> Result<(), String> {
        let api = self.api;
        // SAFETY: a live camera.
        checked(api, |err| unsafe {
            (api.arv_camera_stop_acquisition)(self.cam(), err)
        })
    }
}

#[allow(unsafe_code)] // reason: drops the one reference this `Camera` holds
impl Drop for Camera {
    fn drop(&mut self) {
        // SAFETY: our reference, dropped once; nothing uses the pointer after.
        unsafe { (self.api.g_object_unref)(self.cam()) };
    }
}

/// A camera's stream (`ArvStream`): the queue of empty buffers it fills and of filled ones it hands back.
pub struct Stream {
    ptr: NonNull<c_void>,
    api: &'static Api,
}

// SAFETY: as for `Camera`: a GObject used by one thread at a time; its own receiving thread only touches the
// buffer queues, which Aravis locks.
#[allow(unsafe_code)] // reason: the pointer is only ever used by the thread that owns the `Stream`
unsafe impl Send for Stream {}

#[allow(unsafe_code)] // reason: FFI to ArvStream; `ptr` is a live stream for as long as `self` exists
impl Stream {
    /// Gives `buffer` to the stream to fill.
    pub fn push(&self, buffer: Buffer) {
        let buffer = std::mem::ManuallyDrop::new(buffer);
        // SAFETY: a live stream and a buffer whose reference is handed over (transfer full): not unref'd here.
        unsafe { (self.api.arv_stream_push_buffer)(self.ptr.as_ptr(), buffer.ptr.as_ptr()) };
    }

    /// The oldest filled buffer, waiting up to `timeout_us` (µs); `None` when none came.
    pub fn timeout_pop(&self, timeout_us: u64) -> Option<Buffer> {
        // SAFETY: a live stream; a returned buffer is ours (transfer full).
        let ptr =
            unsafe { (self.api.arv_stream_timeout_pop_buffer)(self.ptr.as_ptr(), timeout_us) };
        NonNull::new(ptr).map(|ptr| Buffer { ptr, api: self.api })
    }

    /// The oldest filled buffer if there is one, without waiting.
    pub fn try_pop(&self) -> Option<Buffer> {
        // SAFETY: as for `timeout_pop`.
        let ptr = unsafe { (self.api.arv_stream_try_pop_buffer)(self.ptr.as_ptr()) };
        NonNull::new(ptr).map(|ptr| Buffer { ptr, api: self.api })
    }

    /// Aravis's counts: `(completed buffers, failures, underruns)` (an underrun: a frame came while no empty
    /// buffer was queued).
    pub fn statistics(&self) -> (u64, u64, u64) {
        let (mut done, mut failed, mut underruns) = (0, 0, 0);
        // SAFETY: a live stream, three valid out-pointers.
        unsafe {
            (self.api.arv_stream_get_statistics)(
                self.ptr.as_ptr(),
                &mut done,
                &mut failed,
                &mut underruns,
            )
        };
        (done, failed, underruns)
    }
}

#[allow(unsafe_code)] // reason: drops the one reference this `Stream` holds
impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: our reference, dropped once. The stream stops its thread and frees the buffers it holds.
        unsafe { (self.api.g_object_unref)(self.ptr.as_ptr()) };
    }
}

/// One frame buffer (`ArvBuffer`), ours while popped; [`Stream::push`] hands it back.
pub struct Buffer {
    ptr: NonNull<c_void>,
    api: &'static Api,
}

// SAFETY: as for `Camera`: a GObject owned by one thread at a time.
#[allow(unsafe_code)] // reason: the pointer is only ever used by the thread that owns the `Buffer`
unsafe impl Send for Buffer {}

#[allow(unsafe_code)] // reason: FFI to ArvBuffer; `ptr` is a live buffer we own for as long as `self` exists
impl Buffer {
    /// An empty buffer of `bytes`, its memory allocated by Aravis.
    pub fn new(bytes: usize) -> Result<Self, String> {
        let api = api()?;
        // SAFETY: a null `preallocated` makes Aravis allocate `bytes` itself.
        let ptr = unsafe { (api.arv_buffer_new)(bytes, std::ptr::null_mut()) };
        NonNull::new(ptr)
            .map(|ptr| Self { ptr, api })
            .ok_or_else(|| format!("could not allocate a {bytes}-byte buffer"))
    }

    fn buf(&self) -> Ptr {
        self.ptr.as_ptr()
    }

    /// `ARV_BUFFER_STATUS_*`: [`BUFFER_STATUS_SUCCESS`] for a complete image.
    pub fn status(&self) -> i32 {
        // SAFETY: a live buffer.
        unsafe { (self.api.arv_buffer_get_status)(self.buf()) }
    }

    /// The image's bytes (rows of `width × bytes per pixel + x padding`); empty when it holds no image.
    pub fn image(&self) -> &[u8] {
        let mut len = 0usize;
        // SAFETY: a live buffer; the data lives as long as the buffer, which `&self` borrows.
        let data = unsafe { (self.api.arv_buffer_get_image_data)(self.buf(), &mut len) };
        if data.is_null() {
            return &[];
        }
        // SAFETY: Aravis says `len` bytes at `data` belong to the image part, alive while the buffer is.
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }
    }

    /// Image width and height (px); `(0, 0)` for a buffer without an image.
    pub fn size(&self) -> (u32, u32) {
        // SAFETY: a live buffer.
        let (w, h) = unsafe {
            (
                (self.api.arv_buffer_get_image_width)(self.buf()),
                (self.api.arv_buffer_get_image_height)(self.buf()),
            )
        };
        (w.max(0) as u32, h.max(0) as u32)
    }

    /// The image's pixel format (PFNC code).
    pub fn pixel_format(&self) -> u32 {
        // SAFETY: a live buffer.
        unsafe { (self.api.arv_buffer_get_image_pixel_format)(self.buf()) }
    }

    /// Bytes of padding at the end of each row.
    pub fn row_padding(&self) -> usize {
        let (mut x, mut y) = (0, 0);
        // SAFETY: a live buffer, two valid out-pointers.
        unsafe { (self.api.arv_buffer_get_image_padding)(self.buf(), &mut x, &mut y) };
        x.max(0) as usize
    }

    /// The camera's timestamp of the frame (ns on the camera's clock; GigE Vision cameras commonly latch it
    /// at the start of exposure). Aravis puts the host's wall-clock arrival time here when the camera has no
    /// timestamp clock.
    pub fn timestamp_ns(&self) -> u64 {
        // SAFETY: a live buffer.
        unsafe { (self.api.arv_buffer_get_timestamp)(self.buf()) }
    }

    /// When the frame's first packet reached the host: `CLOCK_REALTIME` (ns, µs resolution), as Aravis 0.8
    /// stamps it with `g_get_real_time()` (`arvgvstream.c`, `arvuvstream.c`).
    pub fn system_timestamp_realtime_ns(&self) -> u64 {
        // SAFETY: a live buffer.
        unsafe { (self.api.arv_buffer_get_system_timestamp)(self.buf()) }
    }

    /// The camera's frame id (GigE Vision 1.x: 16 bits, 1…65535, wrapping past 0).
    pub fn frame_id(&self) -> u64 {
        // SAFETY: a live buffer.
        unsafe { (self.api.arv_buffer_get_frame_id)(self.buf()) }
    }
}

#[allow(unsafe_code)] // reason: drops the one reference this `Buffer` holds
impl Drop for Buffer {
    fn drop(&mut self) {
        // SAFETY: our reference (a buffer pushed to a stream is not dropped: see `Stream::push`).
        unsafe { (self.api.g_object_unref)(self.buf()) };
    }
}
