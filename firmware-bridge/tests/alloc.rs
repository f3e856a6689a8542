//! Proves that `send` and `poll` on the simulated device allocate nothing after construction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use reflex_firmware_bridge::{Output, OutputCommand, SimConfig, SimulatedDevice};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

#[test]
fn send_and_poll_allocate_nothing_after_construction() {
    let clock = Arc::new(AtomicU64::new(0));
    let reader = Arc::clone(&clock);
    let mut device = SimulatedDevice::new(
        SimConfig::default(),
        Arc::new(move || reader.load(Ordering::Relaxed)),
    );
    let probe = device.probe();
    let counted = allocations(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(8))));
    assert_eq!(
        counted, 1,
        "the counting allocator itself must see allocations"
    );
    let mut acks = 0u64;
    let mut errors = 0u64;
    let count = allocations(|| {
        for i in 0..2_000u32 {
            let command = match i % 4 {
                0 => OutputCommand::SetLevel {
                    channel: 0,
                    high: true,
                },
                1 => OutputCommand::Pulse {
                    channel: 1,
                    width_us: 500,
                },
                2 => OutputCommand::PulseTrain {
                    channel: 2,
                    period_us: 1_000,
                    width_us: 100,
                    count: 5,
                },
                _ => OutputCommand::AllOff,
            };
            device.send(command, i).unwrap();
            // Refused on the host side: errors must not allocate either.
            assert!(
                device
                    .send(
                        OutputCommand::SetLevel {
                            channel: 200,
                            high: true
                        },
                        i
                    )
                    .is_err()
            );
            device.heartbeat().unwrap();
            device.request_sync().unwrap();
            clock.fetch_add(25_000, Ordering::Relaxed); // 25 µs: past the actuation delay
            device
                .poll(&mut |event| match event {
                    reflex_firmware_bridge::DeviceEvent::Ack { .. } => acks += 1,
                    reflex_firmware_bridge::DeviceEvent::Error { .. } => errors += 1,
                    _ => {}
                })
                .unwrap();
        }
        device.all_off().unwrap();
    });
    assert_eq!(acks, 2_000);
    assert_eq!(errors, 0);
    assert_eq!(probe.commands_executed(), 2_000);
    assert_eq!(count, 0, "send/poll allocated {count} times");
}
