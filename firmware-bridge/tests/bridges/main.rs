//! The Pulse Pal, Harp and Bpod bridges end to end against fake devices, byte for byte against
//! the published protocols (and, for Harp, against harp-tech's Python library), plus a
//! counting-allocator proof that `send` and `poll` allocate nothing.

mod alloc;
mod bpod;
mod fake;
mod harp;
mod pulsepal;
mod serial;

use reflex_firmware_bridge::transport::BadReply;
use reflex_firmware_bridge::{DeviceEvent, Output, OutputError};

/// Every event `poll` hands out.
pub fn events(output: &mut dyn Output) -> Vec<DeviceEvent> {
    let mut events = Vec::new();
    output.poll(&mut |e| events.push(e)).unwrap();
    events
}

/// The [`BadReply`] inside an I/O error, with its kind.
pub fn bad_reply(error: &OutputError) -> (std::io::ErrorKind, &BadReply) {
    let OutputError::Io(io) = error else {
        panic!("expected an I/O error carrying BadReply, got {error:?}");
    };
    let reply = io
        .get_ref()
        .and_then(|e| e.downcast_ref::<BadReply>())
        .unwrap_or_else(|| panic!("no BadReply inside {io:?}"));
    (io.kind(), reply)
}
