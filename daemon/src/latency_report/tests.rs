use std::time::Duration;

use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};

use super::*;

/// An interval log as the session writer writes it: per interval, one histogram per (tag, values).
fn hlog(intervals: &[&[(&str, &[u64])]]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = V2DeflateSerializer::new();
    let mut w = IntervalLogWriterBuilder::new()
        .add_comment("test")
        .with_start_time(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .begin_log_with(&mut out, &mut ser)
        .unwrap();
    for (i, stages) in intervals.iter().enumerate() {
        for (tag, values) in stages.iter() {
            let mut h = new_histogram();
            values.iter().for_each(|&v| h.record(v).unwrap());
            let start = Duration::from_millis(500 + 1000 * i as u64);
            w.write_histogram(&h, start, Duration::from_secs(1), Tag::new(tag))
                .unwrap();
        }
    }
    drop(w);
    out
}

#[test]
fn hlog_intervals_rows_and_totals() {
    let bytes = hlog(&[
        &[
            ("end_to_end", &[1_000_000, 2_000_000, 3_000_000]),
            ("inference", &[500_000]),
        ],
        &[("end_to_end", &[10_000_000]), ("a_future_stage", &[7])],
        &[("end_to_end", &[4_000_000, 4_000_000]), ("inference", &[])],
    ]);
    let log = parse_hlog(&bytes, "latency.hlog", 2).unwrap();
    let e2e = Stage::EndToEnd as usize;
    let inf = Stage::Inference as usize;
    assert_eq!(log.intervals.len(), 3);
    let first = &log.intervals[0];
    assert_eq!((first.start_s, first.length_s), (0.5, 1.0));
    assert_eq!(first.stages[e2e].count, 3);
    assert_eq!(
        first.stages[e2e].p50,
        new_histogram().highest_equivalent(2_000_000)
    );
    assert_eq!(first.stages[inf].count, 1);
    assert_eq!(
        log.intervals[1].stages[inf].count, 0,
        "no inference line in interval 2"
    );
    assert_eq!(log.intervals[2].start_s, 2.5);
    // Two intervals per row: rows are exact merges.
    assert_eq!(log.rows.len(), 2);
    assert_eq!((log.rows[0].start_s, log.rows[0].length_s), (0.5, 2.0));
    assert_eq!(log.rows[0].stages[e2e].count, 4);
    assert_eq!(
        log.rows[0].stages[e2e].max,
        new_histogram().highest_equivalent(10_000_000)
    );
    assert_eq!(
        (log.rows[1].start_s, log.rows[1].stages[e2e].count),
        (2.5, 2)
    );
    assert_eq!(log.totals[e2e].len(), 6);
    assert_eq!(log.totals[inf].len(), 1);
    assert!(
        log.totals.iter().map(Histogram::len).sum::<u64>() == 7,
        "unknown tags are skipped"
    );
    // One row per interval when there is room.
    assert_eq!(parse_hlog(&bytes, "x", 30).unwrap().rows.len(), 3);
}

#[test]
fn hlog_errors_name_the_line() {
    let mut bytes = hlog(&[&[("end_to_end", &[1])]]);
    bytes.extend_from_slice(b"Tag=end_to_end,1.0,1.0,1.0,@@notbase64@@\n");
    let err = parse_hlog(&bytes, "s/latency.hlog", 30)
        .unwrap_err()
        .to_string();
    let lines = bytes.iter().filter(|&&b| b == b'\n').count();
    assert!(
        err.contains(&format!("s/latency.hlog line {lines}")),
        "{err}"
    );
    // A last line cut short (a killed session) is not an error.
    let whole = hlog(&[&[("end_to_end", &[1, 2])], &[("end_to_end", &[3])]]);
    let cut = parse_hlog(&whole[..whole.len() - 5], "l.hlog", 30).unwrap();
    assert_eq!(cut.totals[Stage::EndToEnd as usize].len(), 2);
    let err = parse_hlog(b"#c\nnot a log line\n", "l.hlog", 30)
        .unwrap_err()
        .to_string();
    assert!(err.contains("l.hlog line 2"), "{err}");
}

/// A frame with the given stage durations (ns): capture, queue_inference, inference, queue_actuation, predict,
/// trigger, output (0: no command).
fn frame(id: u64, exposure_ns: u64, d: [u64; 7]) -> FrameTiming {
    let mut t = exposure_ns;
    let mut next = |dt: u64| {
        t += dt;
        t
    };
    let stamps = Stamps {
        exposure_ns,
        capture_ns: next(d[0]),
        infer_start_ns: next(d[1]),
        infer_end_ns: next(d[2]),
        actuation_ns: next(d[3]),
        predicted_ns: next(d[4]),
        decided_ns: next(d[5]),
        written_ns: if d[6] == 0 { 0 } else { next(d[6]) },
    };
    FrameTiming {
        frame: id,
        stamps,
        ack: None,
    }
}

#[test]
fn spans_add_up_like_the_loop_records_them() {
    let mut f = frame(7, 1_000, [1, 20, 300, 4, 5, 6, 70]);
    f.ack = Some(Ack {
        command_ns: f.stamps.written_ns - 10,
        ack_ns: f.stamps.written_ns + 900,
    });
    let s = f.spans_ns();
    let get = |st: Stage| s[st as usize];
    assert_eq!(get(Stage::Capture), Some(1));
    assert_eq!(get(Stage::QueueInference), Some(20));
    assert_eq!(get(Stage::Inference), Some(300));
    assert_eq!(get(Stage::QueueActuation), Some(4));
    assert_eq!(get(Stage::Predict), Some(5));
    assert_eq!(get(Stage::Trigger), Some(6));
    assert_eq!(get(Stage::Output), Some(70));
    assert_eq!(get(Stage::EndToEnd), Some(406));
    assert_eq!(get(Stage::OutsideInference), Some(106));
    assert_eq!(get(Stage::DeviceAck), Some(910));
    assert_eq!(get(Stage::ExposureToOutput), Some(406 + 900));
    let quiet = frame(8, 1_000, [1, 20, 300, 4, 5, 6, 0]).spans_ns();
    assert_eq!(quiet[Stage::Output as usize], None);
    assert_eq!(quiet[Stage::DeviceAck as usize], None);
    assert_eq!(quiet[Stage::EndToEnd as usize], Some(336));
}

#[test]
fn worst_frames_are_slowest_first_and_name_what_was_slow() {
    // 100 ordinary frames, one with a long inference, one that waited long for inference, one slightly slow.
    let mut frames: Vec<FrameTiming> = (0..100)
        .map(|i| {
            frame(
                i,
                i * 10_000_000,
                [1_000, 50_000, 5_000_000, 30_000, 5_000, 1_000, 0],
            )
        })
        .collect();
    let mut set = |id: u64, d: [u64; 7]| frames[id as usize] = frame(id, id * 10_000_000, d);
    // A long inference; a long wait for inference.
    set(40, [1_000, 50_000, 12_000_000, 30_000, 5_000, 1_000, 0]);
    set(70, [1_000, 4_000_000, 5_000_000, 30_000, 5_000, 1_000, 0]);
    // A long wait for actuation, and a trigger step just above its p99: both named. Its predict step is
    // further above its median than that trigger step but under its p99 (frames 10 and 11 predict longer).
    set(80, [1_000, 50_000, 5_000_000, 3_000_000, 9_000, 1_500, 0]);
    set(10, [1_000, 50_000, 5_000_000, 30_000, 20_000, 1_000, 0]);
    set(11, [1_000, 50_000, 5_000_000, 30_000, 20_000, 1_000, 0]);
    // The session's second longest inference: its p99, not above it, yet the part furthest above its median.
    set(90, [1_000, 50_000, 5_500_000, 30_000, 5_000, 1_000, 0]);
    let mut hists: [Histogram<u64>; STAGES] = std::array::from_fn(|_| new_histogram());
    for f in &frames {
        for (h, v) in hists.iter_mut().zip(f.spans_ns()) {
            v.into_iter().for_each(|v| h.record(v).unwrap());
        }
    }
    let q: [Quantiles; STAGES] = std::array::from_fn(|i| Quantiles::of(&hists[i]));
    let worst = worst_frames(&frames, &q, 4);
    let ids: Vec<u64> = worst.iter().map(|w| w.timing.frame).collect();
    assert_eq!(ids, [40, 70, 80, 90]);
    let slow = |w: &WorstFrame| w.slow.iter().map(|s| s.stage).collect::<Vec<_>>();
    assert_eq!(slow(&worst[0]), [Stage::Inference]);
    assert_eq!(slow(&worst[1]), [Stage::QueueInference]);
    assert_eq!(slow(&worst[2]), [Stage::QueueActuation, Stage::Trigger]);
    assert_eq!(slow(&worst[3]), [Stage::Inference]);
    assert!(worst[3].slow[0].ns <= worst[3].slow[0].p99_ns);
    assert_eq!(worst[0].spans[Stage::EndToEnd as usize], Some(12_087_000));
    assert_eq!(worst_frames(&frames, &q, 1000).len(), 100);
}

#[test]
fn gaps_in_frame_ids_are_dropped_frames() {
    let frames: Vec<FrameTiming> = [0u64, 1, 4, 5, 9, 10]
        .iter()
        .map(|&i| frame(i, i * 100, [1; 7]))
        .collect();
    assert_eq!(
        gaps(&frames),
        [
            Gap {
                after_frame: 1,
                missing: 2,
                next_exposure_ns: 400
            },
            Gap {
                after_frame: 5,
                missing: 3,
                next_exposure_ns: 900
            }
        ]
    );
    assert!(gaps(&frames[..2]).is_empty());
}

#[test]
fn frames_csv_round_trip_and_errors() {
    let text = format!("{FRAMES_HEADER}\n3,10,11,12,13,14,15,16,\n4,20,21,22,23,24,25,26,27\n");
    let frames = parse_frames(&text, "frames.csv").unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].stamps.written_ns, 0);
    assert_eq!(frames[1].stamps.written_ns, 27);
    assert_eq!(frames[1].stamps.exposure_ns, 20);
    let err = parse_frames(&format!("{FRAMES_HEADER}\n3,10,11\n"), "s/frames.csv")
        .unwrap_err()
        .to_string();
    assert!(err.contains("s/frames.csv line 2"), "{err}");
    let err = parse_frames("frame,t\n", "f.csv").unwrap_err().to_string();
    assert!(err.contains("f.csv line 1"), "{err}");
}

#[test]
fn acks_join_to_the_frame_of_their_command() {
    let mut frames = vec![
        frame(3, 0, [1; 7]),
        frame(4, 0, [1; 7]),
        frame(5, 0, [1; 7]),
    ];
    let events = r#"{"type":"command","frame":3,"t_ns":100,"seq":1,"command":"pulse","channel":0,"width_us":5,"shutdown":false}
{"type":"command","frame":3,"t_ns":110,"seq":2,"command":"pulse","channel":1,"width_us":5,"shutdown":false}
{"type":"ack","frame":3,"seq":1,"device_time_us":9,"t_ns":150}
{"type":"ack","frame":3,"seq":2,"device_time_us":9,"t_ns":170}
{"type":"command","frame":4,"t_ns":200,"seq":3,"command":"all_off","shutdown":false}
{"type":"ack","frame":4,"seq":3,"device_time_us":9,"t_ns":0}
{"type":"ack","frame":null,"seq":4,"device_time_us":9,"t_ns":300}
"#;
    join_acks(&mut frames, events, "events.jsonl").unwrap();
    assert_eq!(
        frames[0].ack,
        Some(Ack {
            command_ns: 110,
            ack_ns: 170
        })
    );
    assert_eq!(
        frames[1].ack, None,
        "an ack without host time is not joined"
    );
    assert_eq!(frames[2].ack, None);
    let err = join_acks(&mut frames, "{}\nnot json\n", "e.jsonl")
        .unwrap_err()
        .to_string();
    assert!(err.contains("e.jsonl line 2"), "{err}");
}
