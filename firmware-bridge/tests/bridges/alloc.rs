//! Proves that `send`, `poll`, `request_sync` and `all_off` of every bridge allocate nothing after
//! `connect` (the fake devices reserve their buffers up front, so only the bridge is counted).

use reflex_firmware_bridge::bpod::{Bpod, BpodConfig, BpodPort};
use reflex_firmware_bridge::harp::{Harp, HarpConfig};
use reflex_firmware_bridge::pulsepal::{PulsePal, PulsePalConfig};
use reflex_firmware_bridge::{DeviceEvent, Output, OutputCommand};

use crate::fake::{BpodModel, Fake, HarpModel, PulsePalModel};

#[path = "../support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::allocations;

/// The commands each bridge accepts, in a repeating mix.
fn drive(
    device: &mut dyn Output,
    commands: &[OutputCommand],
    sync: bool,
    fake_clear: &dyn Fn(),
) -> u64 {
    let mut acks = 0;
    for i in 0..2_000u32 {
        let command = commands[i as usize % commands.len()];
        device.send(command, i).unwrap();
        device.heartbeat().unwrap();
        if sync {
            device.request_sync().unwrap();
        }
        device
            .poll(&mut |e| {
                if matches!(e, DeviceEvent::Ack { .. }) {
                    acks += 1;
                }
            })
            .unwrap();
        if i % 100 == 0 {
            fake_clear();
        }
    }
    device.all_off().unwrap();
    acks
}

#[test]
fn bridges_allocate_nothing_per_command() {
    let counted = allocations(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(8))));
    assert_eq!(
        counted, 1,
        "the counting allocator itself must see allocations"
    );

    // Widths alternate so the bridges reprogram the device (the slow path) as often as not.
    let commands = [
        OutputCommand::Pulse {
            channel: 0,
            width_us: 1_000,
        },
        OutputCommand::Pulse {
            channel: 0,
            width_us: 2_000,
        },
        OutputCommand::SetLevel {
            channel: 1,
            high: true,
        },
        OutputCommand::SetLevel {
            channel: 1,
            high: false,
        },
        OutputCommand::AllOff,
    ];

    let fake = Fake::new(PulsePalModel::new(21));
    let mut pulse_pal = PulsePal::connect(fake.clone(), PulsePalConfig::default()).unwrap();
    let mut train = commands.to_vec();
    train.push(OutputCommand::PulseTrain {
        channel: 2,
        period_us: 10_000,
        width_us: 1_000,
        count: 3,
    });
    let n = allocations(|| {
        drive(&mut pulse_pal, &train, false, &|| fake.clear_written());
    });
    assert_eq!(n, 0, "Pulse Pal allocated {n} times");

    let fake = Fake::new(HarpModel::behavior());
    let mut harp = Harp::connect(fake.clone(), HarpConfig::behavior()).unwrap();
    let mut acks = 0;
    let n = allocations(|| {
        acks = drive(&mut harp, &commands, true, &|| fake.clear_written());
    });
    assert_eq!(n, 0, "Harp allocated {n} times");
    assert_eq!(acks, 2_000);

    let fake = Fake::new(BpodModel::main_port(0));
    let config = BpodConfig {
        port: BpodPort::Primary,
        all_off_soft_code: Some(9),
        ..BpodConfig::default()
    };
    let mut bpod = Bpod::connect(fake.clone(), config).unwrap();
    let pulses = [
        OutputCommand::Pulse {
            channel: 3,
            width_us: 1,
        },
        OutputCommand::AllOff,
    ];
    let n = allocations(|| {
        drive(&mut bpod, &pulses, false, &|| fake.clear_written());
    });
    assert_eq!(n, 0, "Bpod allocated {n} times");
}
