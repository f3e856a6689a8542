//! A minimal MP4 writer for one H.264 video track: makes the small videos that tests and the capture
//! benchmark replay through [`VideoSource`](super::video::VideoSource), without FFmpeg on the machine.
//!
//! Takes Annex-B access units (what encoders such as OpenH264 emit: start codes, SPS/PPS in band) and writes
//! `ftyp`, one `mdat` and a `moov` with an `avc1`/`avcC` sample entry, the SPS and PPS moved into `avcC` and
//! every other NAL unit length-prefixed (4 bytes). One chunk; no B-frames (`ctts`), no edit list.

use std::io::Write as _;
use std::path::Path;

/// One coded frame: an Annex-B access unit and how long it is shown, in the track's timescale.
#[derive(Debug, Clone)]
pub struct CodedFrame {
    /// Annex-B bytes (start codes before each NAL unit).
    pub annex_b: Vec<u8>,
    /// Display duration in `timescale` units (the gap to the next frame's timestamp).
    pub duration: u32,
}

/// Writes `frames` as an MP4 file of `width` × `height` px with `timescale` ticks per second. Fails if the
/// first frames carry no SPS and PPS.
pub fn write_h264_mp4(
    path: &Path,
    width: u16,
    height: u16,
    timescale: u32,
    frames: &[CodedFrame],
) -> std::io::Result<()> {
    let invalid = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, m.to_string());
    let (mut sps, mut pps) = (None, None);
    let mut mdat = Vec::new();
    let mut sizes = Vec::with_capacity(frames.len());
    let mut sync = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        let start = mdat.len();
        for nal in split_annex_b(&frame.annex_b) {
            match nal.first().map(|b| b & 0x1F) {
                Some(7) => sps = sps.or(Some(nal.to_vec())),
                Some(8) => pps = pps.or(Some(nal.to_vec())),
                Some(9) | None => {}
                Some(kind) => {
                    if kind == 5 && sync.last() != Some(&(i as u32 + 1)) {
                        sync.push(i as u32 + 1);
                    }
                    mdat.extend_from_slice(&(nal.len() as u32).to_be_bytes());
                    mdat.extend_from_slice(nal);
                }
            }
        }
        sizes.push((mdat.len() - start) as u32);
    }
    let (Some(sps), Some(pps)) = (sps, pps) else {
        return Err(invalid("no SPS/PPS in the H.264 stream"));
    };
    if sps.len() < 4 {
        return Err(invalid("SPS too short"));
    }
    let duration: u64 = frames.iter().map(|f| u64::from(f.duration)).sum();

    let ftyp = boxed(
        b"ftyp",
        &[
            b"isom".as_slice(),
            &512u32.to_be_bytes(),
            b"isomiso2avc1mp41",
        ]
        .concat(),
    );
    let mdat_offset = ftyp.len() as u32 + 8;

    let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xFF, 0xE1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(&sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(&pps);
    let mut avc1 = vec![0u8; 6];
    avc1.extend_from_slice(&1u16.to_be_bytes()); // data reference index
    avc1.extend_from_slice(&[0u8; 16]);
    avc1.extend_from_slice(&width.to_be_bytes());
    avc1.extend_from_slice(&height.to_be_bytes());
    avc1.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    avc1.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    avc1.extend_from_slice(&[0u8; 4]);
    avc1.extend_from_slice(&1u16.to_be_bytes()); // frame count
    avc1.extend_from_slice(&[0u8; 32]); // compressor name
    avc1.extend_from_slice(&0x0018u16.to_be_bytes());
    avc1.extend_from_slice(&0xFFFFu16.to_be_bytes());
    avc1.extend_from_slice(&boxed(b"avcC", &avcc));
    let stsd = full(
        b"stsd",
        &[&1u32.to_be_bytes(), boxed(b"avc1", &avc1).as_slice()].concat(),
    );

    let mut stts_runs: Vec<(u32, u32)> = Vec::new();
    for f in frames {
        match stts_runs.last_mut() {
            Some((count, d)) if *d == f.duration => *count += 1,
            _ => stts_runs.push((1, f.duration)),
        }
    }
    let stts = full(b"stts", &table(stts_runs.iter().flat_map(|&(c, d)| [c, d])));
    let stts_len = stts_runs.len() as u32;
    let stts = patch_count(stts, stts_len);
    let stss = patch_count(
        full(b"stss", &table(sync.iter().copied())),
        sync.len() as u32,
    );
    let stsc = full(b"stsc", &table([1, 1, frames.len() as u32, 1]));
    let stsz = full(
        b"stsz",
        &table(
            [0, frames.len() as u32]
                .into_iter()
                .chain(sizes.iter().copied()),
        ),
    );
    let stco = full(b"stco", &table([1, mdat_offset]));
    let stbl = boxed(b"stbl", &[stsd, stts, stss, stsc, stsz, stco].concat());

    let url = full_flags(b"url ", 1, &[]);
    let dinf = boxed(
        b"dinf",
        &full(b"dref", &[&1u32.to_be_bytes(), url.as_slice()].concat()),
    );
    let vmhd = full_flags(b"vmhd", 1, &[0u8; 8]);
    let minf = boxed(b"minf", &[vmhd, dinf, stbl].concat());
    let hdlr = full(
        b"hdlr",
        &[&[0u8; 4], b"vide".as_slice(), &[0u8; 12], b"VideoHandler\0"].concat(),
    );
    let mdhd = full(
        b"mdhd",
        &table([0, 0, timescale, duration as u32, 0x55C4_0000]),
    );
    let mdia = boxed(b"mdia", &[mdhd, hdlr, minf].concat());
    let matrix = table([0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000]);
    let mut tkhd = table([0, 0, 1, 0, duration as u32, 0, 0, 0, 0]);
    tkhd.extend_from_slice(&matrix);
    tkhd.extend_from_slice(&table([u32::from(width) << 16, u32::from(height) << 16]));
    let tkhd = full_flags(b"tkhd", 3, &tkhd);
    let trak = boxed(b"trak", &[tkhd, mdia].concat());
    let mut mvhd = table([0, 0, timescale, duration as u32, 0x0001_0000]);
    mvhd.extend_from_slice(&[0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    mvhd.extend_from_slice(&matrix);
    mvhd.extend_from_slice(&[0u8; 24]);
    mvhd.extend_from_slice(&2u32.to_be_bytes());
    let moov = boxed(b"moov", &[full(b"mvhd", &mvhd), trak].concat());

    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    file.write_all(&ftyp)?;
    file.write_all(&(mdat.len() as u32 + 8).to_be_bytes())?;
    file.write_all(b"mdat")?;
    file.write_all(&mdat)?;
    file.write_all(&moov)?;
    file.flush()
}

/// The NAL units of an Annex-B stream (between 3- or 4-byte start codes).
pub fn split_annex_b(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts
        .iter()
        .skip(1)
        .map(|&s| {
            let mut e = s - 3;
            while e > 0 && data[e - 1] == 0 {
                e -= 1;
            }
            e
        })
        .chain(std::iter::once(data.len()))
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .filter(|(s, e)| s < e)
        .map(move |(s, e)| &data[s..e])
}

fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(&(body.len() as u32 + 8).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    out
}

fn full_flags(kind: &[u8; 4], flags: u32, body: &[u8]) -> Vec<u8> {
    boxed(kind, &[&(flags & 0x00FF_FFFF).to_be_bytes(), body].concat())
}

fn full(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    full_flags(kind, 0, body)
}

/// Big-endian u32s.
fn table(values: impl IntoIterator<Item = u32>) -> Vec<u8> {
    values.into_iter().flat_map(u32::to_be_bytes).collect()
}

/// Inserts an entry count after a full box's version/flags (for tables built without one).
fn patch_count(mut full_box: Vec<u8>, count: u32) -> Vec<u8> {
    full_box.splice(12..12, count.to_be_bytes());
    let len = full_box.len() as u32;
    full_box[..4].copy_from_slice(&len.to_be_bytes());
    full_box
}
