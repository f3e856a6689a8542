//! The reflex AVR firmware (`firmware/`), tested as built: the C codec against reflex-protocol,
//! and the firmware ELF under simavr with its UART on a PTY, driven by [`SerialDevice`], with
//! pin edges measured in simulated time by the harness (`firmware/harness/reflex_sim.c`).
//!
//! Needs `make`, `avr-gcc`/avr-libc and simavr's library (Debian: gcc-avr avr-libc simavr
//! libsimavr-dev libelf-dev; `tools/test.sh` installs them). Without them the tests fail and
//! say so: the firmware is part of the product, so it is never skipped silently.

mod codec;
mod rig;
mod sim;
