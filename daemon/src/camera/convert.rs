//! Pixel-format conversions from what cameras and decoders deliver to what the loop carries ([`Rgb8`] or
//! [`Gray8`] frames, rows packed without padding).
//!
//! Pure functions on preallocated buffers: they never allocate (but [`MjpegDecoder`], whose JPEG decoder
//! keeps its own scratch space), never panic on bad sizes (they return a [`ConvertError`]), and take the
//! source's row stride so a driver's or a decoder's padded buffer is read in place.
//!
//! YUV uses the BT.601 matrix, the one V4L2 webcams and most SD/HD recordings use, in either range:
//! [`YuvRange::Limited`] (Y 16–235, chroma 16–240: what webcams and H.264 encoders write unless told
//! otherwise) or [`YuvRange::Full`] (0–255: JPEG/MJPEG). Arithmetic is 16-bit fixed point, rounded to the
//! nearest integer and clamped, so a result is within ±1 of the exact formula.
//!
//! [`Rgb8`]: super::PixelFormat::Rgb8
//! [`Gray8`]: super::PixelFormat::Gray8

/// Errors from a conversion: the buffers do not fit the image, or the compressed data is bad.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    /// A source plane is too short for the image, or its stride is shorter than a row.
    #[error(
        "{what} plane: {got} bytes with a stride of {stride}, a {width}x{height} image needs {need}"
    )]
    SourceTooSmall {
        /// Which plane (`Y`, `UV`, `YUYV`, ...).
        what: &'static str,
        /// Its length (bytes).
        got: usize,
        /// Its row stride (bytes).
        stride: usize,
        /// Bytes needed.
        need: usize,
        /// Image width (px).
        width: usize,
        /// Image height (px).
        height: usize,
    },
    /// The destination does not hold exactly one packed image.
    #[error("destination is {got} bytes, a {width}x{height} image needs {need}")]
    Destination {
        /// Its length (bytes).
        got: usize,
        /// Bytes needed.
        need: usize,
        /// Image width (px).
        width: usize,
        /// Image height (px).
        height: usize,
    },
    /// The format needs an even width (YUYV packs two pixels in four bytes).
    #[error("{what} needs an even width, got {width}")]
    OddWidth {
        /// The format.
        what: &'static str,
        /// Image width (px).
        width: usize,
    },
    /// A JPEG frame is not the size the stream was opened with.
    #[error("MJPEG frame is {got_w}x{got_h}, the camera was set to {want_w}x{want_h}")]
    JpegSize {
        /// Frame width (px).
        got_w: usize,
        /// Frame height (px).
        got_h: usize,
        /// Expected width (px).
        want_w: usize,
        /// Expected height (px).
        want_h: usize,
    },
    /// The JPEG data could not be decoded.
    #[error("corrupt MJPEG frame: {0}")]
    Jpeg(String),
}

/// One plane of 8-bit samples: `stride` bytes from the start of one row to the next (≥ the row's bytes).
#[derive(Debug, Clone, Copy)]
pub struct Plane<'a> {
    /// The samples, row after row.
    pub data: &'a [u8],
    /// Bytes from one row to the next.
    pub stride: usize,
}

impl<'a> Plane<'a> {
    /// A plane of `data` with rows `stride` bytes apart.
    pub fn new(data: &'a [u8], stride: usize) -> Self {
        Self { data, stride }
    }

    /// Checks that `rows` rows of `row_bytes` fit; `what` names the plane in the error.
    fn check(
        &self,
        what: &'static str,
        row_bytes: usize,
        rows: usize,
        (width, height): (usize, usize),
    ) -> Result<(), ConvertError> {
        let need = if rows == 0 {
            0
        } else {
            (rows - 1) * self.stride + row_bytes
        };
        if self.stride < row_bytes || self.data.len() < need {
            return Err(ConvertError::SourceTooSmall {
                what,
                got: self.data.len(),
                stride: self.stride,
                need: need.max(rows * row_bytes),
                width,
                height,
            });
        }
        Ok(())
    }

    /// Row `y`, `len` bytes (after `check`).
    fn row(&self, y: usize, len: usize) -> &'a [u8] {
        &self.data[y * self.stride..][..len]
    }
}

/// The range of YUV samples (BT.601 matrix in both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum YuvRange {
    /// "TV" range: Y 16–235, U and V 16–240 (V4L2 webcams' YUYV, H.264/MPEG video unless flagged full).
    #[default]
    Limited,
    /// "PC" range: all of 0–255 (JPEG and MJPEG).
    Full,
}

/// The colour-filter layout of a raw Bayer sensor, named by its top-left 2×2 block, row by row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BayerPattern {
    /// R G / G B (GenICam `BayerRG8`).
    Rggb,
    /// B G / G R (GenICam `BayerBG8`).
    Bggr,
    /// G R / B G (GenICam `BayerGR8`).
    Grbg,
    /// G B / R G (GenICam `BayerGB8`).
    Gbrg,
}

/// Fixed-point (×2¹⁶) BT.601 coefficients for one range.
#[derive(Debug, Clone, Copy)]
struct Coefficients {
    y_offset: i32,
    y_gain: i32,
    r_v: i32,
    g_u: i32,
    g_v: i32,
    b_u: i32,
}

impl YuvRange {
    const fn coefficients(self) -> Coefficients {
        match self {
            // 255/219, and 255/224 × (1.402, 0.344136, 0.714136, 1.772).
            YuvRange::Limited => Coefficients {
                y_offset: 16,
                y_gain: 76_309,
                r_v: 104_597,
                g_u: 25_675,
                g_v: 53_279,
                b_u: 132_201,
            },
            YuvRange::Full => Coefficients {
                y_offset: 0,
                y_gain: 65_536,
                r_v: 91_881,
                g_u: 22_554,
                g_v: 46_802,
                b_u: 116_130,
            },
        }
    }
}

const HALF: i32 = 1 << 15;

#[inline(always)]
fn clamp_u8(v: i32) -> u8 {
    (v >> 16).clamp(0, 255) as u8
}

/// The chroma terms of one U, V pair: (R, G, B) additions in ×2¹⁶ fixed point, rounding included.
#[inline(always)]
fn chroma(c: &Coefficients, u: u8, v: u8) -> (i32, i32, i32) {
    let (u, v) = (i32::from(u) - 128, i32::from(v) - 128);
    (
        c.r_v * v + HALF,
        HALF - c.g_u * u - c.g_v * v,
        c.b_u * u + HALF,
    )
}

#[inline(always)]
fn put_rgb(c: &Coefficients, y: u8, (r, g, b): (i32, i32, i32), out: &mut [u8]) {
    let y = c.y_gain * (i32::from(y) - c.y_offset);
    out[0] = clamp_u8(y + r);
    out[1] = clamp_u8(y + g);
    out[2] = clamp_u8(y + b);
}

#[inline(always)]
fn luma_to_gray(c: &Coefficients, y: u8) -> u8 {
    clamp_u8(c.y_gain * (i32::from(y) - c.y_offset) + HALF)
}

/// A YUYV source (even width: two pixels share U and V) and a destination of `channels` per pixel.
fn check_yuyv(
    src: &Plane<'_>,
    width: usize,
    height: usize,
    dst: &[u8],
    channels: usize,
) -> Result<(), ConvertError> {
    if !width.is_multiple_of(2) {
        return Err(ConvertError::OddWidth {
            what: "YUYV",
            width,
        });
    }
    src.check("YUYV", width * 2, height, (width, height))?;
    check_dst(dst, width, height, channels)
}

fn check_dst(dst: &[u8], width: usize, height: usize, channels: usize) -> Result<(), ConvertError> {
    let need = width * height * channels;
    if dst.len() != need {
        return Err(ConvertError::Destination {
            got: dst.len(),
            need,
            width,
            height,
        });
    }
    Ok(())
}

/// 8-bit gray → RGB8 (each gray value copied to R, G and B).
pub fn gray_to_rgb(
    src: Plane<'_>,
    width: usize,
    height: usize,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    src.check("gray", width, height, (width, height))?;
    check_dst(dst, width, height, 3)?;
    for (y, out) in dst.chunks_exact_mut(width * 3).enumerate() {
        for (px, &g) in out.chunks_exact_mut(3).zip(src.row(y, width)) {
            px.copy_from_slice(&[g, g, g]);
        }
    }
    Ok(())
}

/// YUYV (YUV 4:2:2 packed as Y0 U Y1 V, V4L2 `V4L2_PIX_FMT_YUYV`) → RGB8.
pub fn yuyv_to_rgb(
    src: Plane<'_>,
    width: usize,
    height: usize,
    range: YuvRange,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    check_yuyv(&src, width, height, dst, 3)?;
    let c = range.coefficients();
    if width == 0 {
        return Ok(());
    }
    // Luma every 2 bytes from 0, U every 4 from 1, V every 4 from 3.
    rows_yuv::<2, 4>(&c, dst, width, |y| {
        let row = src.row(y, width * 2);
        (row, &row[1..], &row[3..])
    });
    Ok(())
}

/// YUYV → 8-bit gray: the luma, stretched to 0–255 when the range is limited.
pub fn yuyv_to_gray(
    src: Plane<'_>,
    width: usize,
    height: usize,
    range: YuvRange,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    check_yuyv(&src, width, height, dst, 1)?;
    let c = range.coefficients();
    for (y, out) in dst.chunks_exact_mut(width).enumerate() {
        for (o, yuyv) in out.iter_mut().zip(src.row(y, width * 2).chunks_exact(2)) {
            *o = luma_to_gray(&c, yuyv[0]);
        }
    }
    Ok(())
}

/// Planar YUV 4:2:0 (I420: a Y plane, then U and V at half width and height, rounded up) → RGB8. What
/// H.264 decoders output.
pub fn i420_to_rgb(
    y_plane: Plane<'_>,
    u_plane: Plane<'_>,
    v_plane: Plane<'_>,
    width: usize,
    height: usize,
    range: YuvRange,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    y_plane.check("Y", width, height, (width, height))?;
    u_plane.check("U", cw, ch, (width, height))?;
    v_plane.check("V", cw, ch, (width, height))?;
    check_dst(dst, width, height, 3)?;
    let c = range.coefficients();
    if width == 0 {
        return Ok(());
    }
    rows_yuv::<1, 1>(&c, dst, width, |y| {
        (
            y_plane.row(y, width),
            u_plane.row(y / 2, cw),
            v_plane.row(y / 2, cw),
        )
    });
    Ok(())
}

/// Semi-planar YUV 4:2:0 (NV12: a Y plane, then one plane of interleaved U V at half resolution) → RGB8.
pub fn nv12_to_rgb(
    y_plane: Plane<'_>,
    uv_plane: Plane<'_>,
    width: usize,
    height: usize,
    range: YuvRange,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    y_plane.check("Y", width, height, (width, height))?;
    uv_plane.check("UV", cw * 2, ch, (width, height))?;
    check_dst(dst, width, height, 3)?;
    let c = range.coefficients();
    if width == 0 {
        return Ok(());
    }
    rows_yuv::<1, 2>(&c, dst, width, |y| {
        let uv = uv_plane.row(y / 2, cw * 2);
        (y_plane.row(y, width), uv, &uv[1..])
    });
    Ok(())
}

/// Pixels per step of the row kernel: enough for the compiler to use whole SIMD registers.
const CHUNK: usize = 16;

/// Converts every row of `dst` (`width` px of RGB8) from the luma and chroma slices `rows(y)` gives: luma
/// of pixel x at `x·Y_STEP`, its chroma at `(x/2)·C_STEP` of the U and V slices. On x86-64 with AVX2 the
/// same code runs compiled for AVX2 (8 lanes of 32-bit products, ~4× faster than SSE2 can do them).
#[inline(always)]
fn rows_yuv<'a, const Y_STEP: usize, const C_STEP: usize>(
    c: &Coefficients,
    dst: &mut [u8],
    width: usize,
    rows: impl Fn(usize) -> (&'a [u8], &'a [u8], &'a [u8]),
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // reason for allowing unsafe: calling a function compiled for AVX2, the one way to use it without
        // building the whole program for AVX2-only CPUs.
        // SAFETY: the CPU supports AVX2, checked just above.
        #[allow(unsafe_code)]
        unsafe {
            rows_yuv_avx2::<Y_STEP, C_STEP>(c, dst, width, &rows)
        };
        return;
    }
    rows_yuv_portable::<Y_STEP, C_STEP>(c, dst, width, &rows);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn rows_yuv_avx2<'a, const Y_STEP: usize, const C_STEP: usize>(
    c: &Coefficients,
    dst: &mut [u8],
    width: usize,
    rows: &impl Fn(usize) -> (&'a [u8], &'a [u8], &'a [u8]),
) {
    rows_yuv_portable::<Y_STEP, C_STEP>(c, dst, width, rows);
}

#[inline(always)]
fn rows_yuv_portable<'a, const Y_STEP: usize, const C_STEP: usize>(
    c: &Coefficients,
    dst: &mut [u8],
    width: usize,
    rows: &impl Fn(usize) -> (&'a [u8], &'a [u8], &'a [u8]),
) {
    for (y, out) in dst.chunks_exact_mut(width * 3).enumerate() {
        let (ys, us, vs) = rows(y);
        row_yuv::<Y_STEP, C_STEP>(c, ys, us, vs, out);
    }
}

/// One output row: `CHUNK` pixels at a time through fixed-size arrays (which the compiler vectorises),
/// then the rest one by one. Each chroma pair serves two pixels (the last one alone if the width is odd).
#[inline(always)]
fn row_yuv<const Y_STEP: usize, const C_STEP: usize>(
    c: &Coefficients,
    ys: &[u8],
    us: &[u8],
    vs: &[u8],
    out: &mut [u8],
) {
    let width = out.len() / 3;
    let chunks = width / CHUNK;
    let y_span = (CHUNK - 1) * Y_STEP + 1;
    let c_span = (CHUNK / 2 - 1) * C_STEP + 1;
    for (k, o) in out.chunks_exact_mut(CHUNK * 3).take(chunks).enumerate() {
        let yc = &ys[k * CHUNK * Y_STEP..][..y_span];
        let uc = &us[k * (CHUNK / 2) * C_STEP..][..c_span];
        let vc = &vs[k * (CHUNK / 2) * C_STEP..][..c_span];
        let (mut r, mut g, mut b) = ([0i32; CHUNK], [0i32; CHUNK], [0i32; CHUNK]);
        for i in 0..CHUNK {
            let luma = c.y_gain * (i32::from(yc[i * Y_STEP]) - c.y_offset);
            let u = i32::from(uc[i / 2 * C_STEP]) - 128;
            let v = i32::from(vc[i / 2 * C_STEP]) - 128;
            r[i] = luma + c.r_v * v + HALF;
            g[i] = luma - c.g_u * u - c.g_v * v + HALF;
            b[i] = luma + c.b_u * u + HALF;
        }
        for i in 0..CHUNK {
            o[3 * i] = clamp_u8(r[i]);
            o[3 * i + 1] = clamp_u8(g[i]);
            o[3 * i + 2] = clamp_u8(b[i]);
        }
    }
    for x in chunks * CHUNK..width {
        let terms = chroma(c, us[x / 2 * C_STEP], vs[x / 2 * C_STEP]);
        put_rgb(c, ys[x * Y_STEP], terms, &mut out[3 * x..3 * x + 3]);
    }
}

/// RGB8 ↔ BGR8: swaps the first and third byte of every pixel (the same function both ways).
pub fn swap_rb(
    src: Plane<'_>,
    width: usize,
    height: usize,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    src.check("RGB", width * 3, height, (width, height))?;
    check_dst(dst, width, height, 3)?;
    for (y, out) in dst.chunks_exact_mut(width * 3).enumerate() {
        for (o, s) in out
            .chunks_exact_mut(3)
            .zip(src.row(y, width * 3).chunks_exact(3))
        {
            o.copy_from_slice(&[s[2], s[1], s[0]]);
        }
    }
    Ok(())
}

/// Raw 8-bit Bayer mosaic → RGB8 by bilinear interpolation: each missing colour is the mean of its nearest
/// neighbours of that colour (2 or 4). Edges mirror the image (index −1 reads index 1), which keeps the
/// mosaic's phase, so a uniformly lit sensor gives a uniform image up to the border.
pub fn bayer_to_rgb(
    src: Plane<'_>,
    width: usize,
    height: usize,
    pattern: BayerPattern,
    dst: &mut [u8],
) -> Result<(), ConvertError> {
    src.check("Bayer", width, height, (width, height))?;
    check_dst(dst, width, height, 3)?;
    if width < 2 || height < 2 {
        // Too small to interpolate: every pixel takes its own sample as gray.
        return gray_to_rgb(src, width, height, dst);
    }
    // Colour (0 R, 1 G, 2 B) at (x & 1, y & 1), indexed [y & 1][x & 1].
    let sites: [[usize; 2]; 2] = match pattern {
        BayerPattern::Rggb => [[0, 1], [1, 2]],
        BayerPattern::Bggr => [[2, 1], [1, 0]],
        BayerPattern::Grbg => [[1, 0], [2, 1]],
        BayerPattern::Gbrg => [[1, 2], [0, 1]],
    };
    let mirror = |i: isize, n: usize| -> usize {
        if i < 0 {
            1
        } else if i as usize >= n {
            n - 2
        } else {
            i as usize
        }
    };
    let at = |x: isize, y: isize| -> u16 {
        u16::from(src.data[mirror(y, height) * src.stride + mirror(x, width)])
    };
    // Which colour sits to the right of a green site in row parity `py`: red (0) or blue (2).
    let red_beside_green = |py: usize, px: usize| sites[py][(px + 1) & 1] == 0;
    for (y, out) in dst.chunks_exact_mut(width * 3).enumerate() {
        let interior_row = y > 0 && y + 1 < height;
        let (prev, cur, next) = if interior_row {
            (
                src.row(y - 1, width),
                src.row(y, width),
                src.row(y + 1, width),
            )
        } else {
            (&[][..], &[][..], &[][..])
        };
        for (x, px) in out.chunks_exact_mut(3).enumerate() {
            let here = sites[y & 1][x & 1];
            let (cross, diagonal, horizontal, vertical, own) =
                if interior_row && x > 0 && x + 1 < width {
                    let w = |r: &[u8], i: usize| u16::from(r[i]);
                    (
                        (w(cur, x - 1) + w(cur, x + 1) + w(prev, x) + w(next, x) + 2) / 4,
                        (w(prev, x - 1) + w(prev, x + 1) + w(next, x - 1) + w(next, x + 1) + 2) / 4,
                        (w(cur, x - 1) + w(cur, x + 1)).div_ceil(2),
                        (w(prev, x) + w(next, x)).div_ceil(2),
                        w(cur, x),
                    )
                } else {
                    let (xi, yi) = (x as isize, y as isize);
                    (
                        (at(xi - 1, yi) + at(xi + 1, yi) + at(xi, yi - 1) + at(xi, yi + 1) + 2) / 4,
                        (at(xi - 1, yi - 1)
                            + at(xi + 1, yi - 1)
                            + at(xi - 1, yi + 1)
                            + at(xi + 1, yi + 1)
                            + 2)
                            / 4,
                        (at(xi - 1, yi) + at(xi + 1, yi)).div_ceil(2),
                        (at(xi, yi - 1) + at(xi, yi + 1)).div_ceil(2),
                        at(xi, yi),
                    )
                };
            let (r, g, b) = match here {
                0 => (own, cross, diagonal),
                2 => (diagonal, cross, own),
                _ if red_beside_green(y & 1, x) => (horizontal, own, vertical),
                _ => (vertical, own, horizontal),
            };
            px.copy_from_slice(&[r as u8, g as u8, b as u8]);
        }
    }
    Ok(())
}

/// Decodes MJPEG camera frames (one JPEG image each) into RGB8 of the size the camera was set to, with
/// `zune-jpeg`, straight into the caller's buffer.
///
/// Many webcams leave the Huffman tables out of their MJPEG frames (the AVI "MJPG" convention: the
/// standard tables of JPEG Annex K.3 are implied). Such a frame is copied into a scratch buffer made at `new`
/// with an `AVI1` APP0 marker added, which tells `zune-jpeg` to use the standard tables (only where a table is
/// missing). The decoder itself keeps scratch buffers of its own: a few allocations per frame, proportional
/// to the image, which the counting-allocator test measures and reports.
#[derive(Debug, Clone)]
pub struct MjpegDecoder {
    width: usize,
    height: usize,
    scratch: Vec<u8>,
}

/// An APP0 segment `AVI1\0`: "this is MJPEG, the standard Huffman tables apply".
const AVI1_APP0: [u8; 9] = [0xFF, 0xE0, 0x00, 0x07, b'A', b'V', b'I', b'1', 0x00];

impl MjpegDecoder {
    /// A decoder for `width` × `height` frames of at most `max_frame_bytes` compressed bytes (the scratch
    /// buffer for frames without tables; a larger one grows it once).
    pub fn new(width: usize, height: usize, max_frame_bytes: usize) -> Self {
        Self {
            width,
            height,
            scratch: Vec::with_capacity(max_frame_bytes + AVI1_APP0.len()),
        }
    }

    /// Decodes one frame into `dst` (`width` × `height` × 3 bytes, RGB8).
    pub fn decode(&mut self, jpeg: &[u8], dst: &mut [u8]) -> Result<(), ConvertError> {
        use zune_jpeg::zune_core::bytestream::ZCursor;
        use zune_jpeg::zune_core::colorspace::ColorSpace;
        use zune_jpeg::zune_core::options::DecoderOptions;

        let (width, height) = (self.width, self.height);
        check_dst(dst, width, height, 3)?;
        let data = if jpeg.len() >= 2 && !has_huffman_tables(jpeg) {
            self.scratch.clear();
            self.scratch.extend_from_slice(&jpeg[..2]);
            self.scratch.extend_from_slice(&AVI1_APP0);
            self.scratch.extend_from_slice(&jpeg[2..]);
            self.scratch.as_slice()
        } else {
            jpeg
        };
        let options = DecoderOptions::default()
            .jpeg_set_out_colorspace(ColorSpace::RGB)
            .set_max_width(width.max(1))
            .set_max_height(height.max(1));
        let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(data), options);
        decoder
            .decode_headers()
            .map_err(|e| ConvertError::Jpeg(e.to_string()))?;
        let (got_w, got_h) = decoder.dimensions().unwrap_or((0, 0));
        if (got_w, got_h) != (width, height) {
            return Err(ConvertError::JpegSize {
                got_w,
                got_h,
                want_w: width,
                want_h: height,
            });
        }
        decoder
            .decode_into(dst)
            .map_err(|e| ConvertError::Jpeg(e.to_string()))
    }
}

/// Whether a DHT (Huffman table) segment comes before the image data, walking the header's segments.
fn has_huffman_tables(jpeg: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
        match jpeg[i + 1] {
            0xC4 => return true,
            0xDA => return false,
            0xFF => i += 1, // fill byte
            _ => i += 2 + usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]])),
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn near(got: &[u8], want: &[u8], tolerance: u8) -> bool {
        got.len() == want.len()
            && got
                .iter()
                .zip(want)
                .all(|(a, b)| a.abs_diff(*b) <= tolerance)
    }

    #[test]
    fn yuyv_limited_range_white_black_and_mid_gray() {
        // Y0 U Y1 V: white (235) and black (16), then mid gray (126) twice, chroma neutral.
        let src = [235, 128, 16, 128, 126, 128, 126, 128];
        let mut rgb = [0u8; 12];
        yuyv_to_rgb(Plane::new(&src, 4), 2, 2, YuvRange::Limited, &mut rgb).unwrap();
        assert_eq!(rgb, [255, 255, 255, 0, 0, 0, 128, 128, 128, 128, 128, 128]);
        let mut gray = [0u8; 4];
        yuyv_to_gray(Plane::new(&src, 4), 2, 2, YuvRange::Limited, &mut gray).unwrap();
        assert_eq!(gray, [255, 0, 128, 128]);
    }

    #[test]
    fn yuyv_full_range_keeps_luma_as_is() {
        let src = [235, 128, 16, 128];
        let mut rgb = [0u8; 6];
        yuyv_to_rgb(Plane::new(&src, 4), 2, 1, YuvRange::Full, &mut rgb).unwrap();
        assert_eq!(rgb, [235, 235, 235, 16, 16, 16]);
        let mut gray = [0u8; 2];
        yuyv_to_gray(Plane::new(&src, 4), 2, 1, YuvRange::Full, &mut gray).unwrap();
        assert_eq!(gray, [235, 16]);
    }

    #[test]
    fn yuyv_primaries_match_the_bt601_formula() {
        // BT.601 limited-range red, green and blue (the standard's 75 %-free, 100 % bars): Y U V from
        // Y = 16 + 219 (0.299 R + 0.587 G + 0.114 B), U/V = 128 + 224 × (B − Y′)/1.772, (R − Y′)/1.402.
        let bars = [
            ([81u8, 90, 240], [255u8, 0, 0]),
            ([145, 54, 34], [0, 255, 0]),
            ([41, 240, 110], [0, 0, 255]),
        ];
        for ([y, u, v], want) in bars {
            let mut rgb = [0u8; 6];
            yuyv_to_rgb(
                Plane::new(&[y, u, y, v], 4),
                2,
                1,
                YuvRange::Limited,
                &mut rgb,
            )
            .unwrap();
            assert!(
                near(&rgb[..3], &want, 2),
                "YUV {y},{u},{v} → {rgb:?}, want {want:?}"
            );
            assert_eq!(rgb[..3], rgb[3..], "both pixels of a pair share the chroma");
        }
    }

    #[test]
    fn yuyv_reads_a_padded_stride_and_refuses_odd_widths_and_short_buffers() {
        // Two rows of one pair, each padded to 8 bytes.
        let src = [235, 128, 235, 128, 9, 9, 9, 9, 16, 128, 16, 128, 9, 9, 9, 9];
        let mut rgb = [0u8; 12];
        yuyv_to_rgb(Plane::new(&src, 8), 2, 2, YuvRange::Limited, &mut rgb).unwrap();
        assert_eq!(rgb, [255, 255, 255, 255, 255, 255, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            yuyv_to_rgb(Plane::new(&src, 8), 3, 1, YuvRange::Limited, &mut [0; 9]),
            Err(ConvertError::OddWidth {
                what: "YUYV",
                width: 3
            })
        );
        assert!(matches!(
            yuyv_to_rgb(Plane::new(&src[..10], 8), 2, 2, YuvRange::Limited, &mut rgb),
            Err(ConvertError::SourceTooSmall { .. })
        ));
        assert!(matches!(
            yuyv_to_rgb(Plane::new(&src, 8), 2, 2, YuvRange::Limited, &mut [0; 11]),
            Err(ConvertError::Destination { .. })
        ));
    }

    #[test]
    fn i420_and_nv12_share_chroma_over_2x2_blocks() {
        // 4x2 image: left block neutral gray (Y 126), right block limited-range red (Y 81, U 90, V 240).
        let y = [126, 126, 81, 81, 126, 126, 81, 81];
        let (u, v) = ([128, 90], [128, 240]);
        let mut want = Vec::new();
        for _ in 0..2 {
            for px in [[128u8, 128, 128], [128, 128, 128], [255, 0, 0], [255, 0, 0]] {
                want.extend_from_slice(&px);
            }
        }
        let mut rgb = [0u8; 24];
        i420_to_rgb(
            Plane::new(&y, 4),
            Plane::new(&u, 2),
            Plane::new(&v, 2),
            4,
            2,
            YuvRange::Limited,
            &mut rgb,
        )
        .unwrap();
        assert!(near(&rgb, &want, 1), "{rgb:?}");
        let uv = [128, 128, 90, 240];
        let mut rgb2 = [0u8; 24];
        nv12_to_rgb(
            Plane::new(&y, 4),
            Plane::new(&uv, 4),
            4,
            2,
            YuvRange::Limited,
            &mut rgb2,
        )
        .unwrap();
        assert_eq!(rgb, rgb2);
    }

    #[test]
    fn i420_handles_odd_sizes() {
        // 3x3: chroma is 2x2; the last column and row use the last chroma sample.
        let y = [16u8; 9];
        let (u, v) = ([128u8, 128, 128, 90], [128u8, 128, 128, 240]);
        let mut rgb = [0u8; 27];
        i420_to_rgb(
            Plane::new(&y, 3),
            Plane::new(&u, 2),
            Plane::new(&v, 2),
            3,
            3,
            YuvRange::Full,
            &mut rgb,
        )
        .unwrap();
        // Full range, Y 16 with U 90, V 240: R = 16 + 1.402 × 112 = 173; G and B fall below 0.
        assert_eq!(&rgb[24..27], &[173, 0, 0]);
        assert_eq!(&rgb[0..3], &[16, 16, 16]);
    }

    /// The per-pixel formula, one pixel at a time: what the chunked (and AVX2) row kernel must reproduce.
    fn reference(range: YuvRange, y: u8, u: u8, v: u8) -> [u8; 3] {
        let c = range.coefficients();
        let mut px = [0u8; 3];
        put_rgb(&c, y, chroma(&c, u, v), &mut px);
        px
    }

    #[test]
    fn chunked_rows_match_the_per_pixel_formula_at_every_width() {
        let mut rng = crate::camera::synthetic::SplitMix64(7);
        let mut noise = |n: usize| (0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>();
        for range in [YuvRange::Limited, YuvRange::Full] {
            // Widths below, at and around the 16-px chunk; strides padded by 3 bytes.
            for width in [1usize, 2, 15, 16, 17, 32, 34, 49] {
                let height = 3usize;
                let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
                let (ys, cs) = (width + 3, cw + 3);
                let (y, u, v) = (noise(ys * height), noise(cs * ch), noise(cs * ch));
                let mut rgb = vec![0u8; width * height * 3];
                i420_to_rgb(
                    Plane::new(&y, ys),
                    Plane::new(&u, cs),
                    Plane::new(&v, cs),
                    width,
                    height,
                    range,
                    &mut rgb,
                )
                .unwrap();
                let mut uv = vec![0u8; cs * 2 * ch];
                for r in 0..ch {
                    for x in 0..cw {
                        uv[r * cs * 2 + 2 * x] = u[r * cs + x];
                        uv[r * cs * 2 + 2 * x + 1] = v[r * cs + x];
                    }
                }
                let mut rgb_nv12 = vec![0u8; width * height * 3];
                nv12_to_rgb(
                    Plane::new(&y, ys),
                    Plane::new(&uv, cs * 2),
                    width,
                    height,
                    range,
                    &mut rgb_nv12,
                )
                .unwrap();
                assert_eq!(rgb, rgb_nv12, "width {width}");
                for row in 0..height {
                    for x in 0..width {
                        let c = (row / 2) * cs + x / 2;
                        let want = reference(range, y[row * ys + x], u[c], v[c]);
                        assert_eq!(
                            rgb[(row * width + x) * 3..][..3],
                            want,
                            "{range:?} width {width} ({x}, {row})"
                        );
                    }
                }
                if width % 2 == 0 {
                    let stride = width * 2 + 4;
                    let yuyv = noise(stride * height);
                    let mut rgb = vec![0u8; width * height * 3];
                    yuyv_to_rgb(Plane::new(&yuyv, stride), width, height, range, &mut rgb).unwrap();
                    for row in 0..height {
                        for x in 0..width {
                            let p = &yuyv[row * stride + x / 2 * 4..][..4];
                            let want = reference(range, p[(x % 2) * 2], p[1], p[3]);
                            assert_eq!(
                                rgb[(row * width + x) * 3..][..3],
                                want,
                                "YUYV width {width} ({x}, {row})"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gray_and_swap_rb() {
        let mut rgb = [0u8; 6];
        gray_to_rgb(Plane::new(&[7, 200, 99], 3), 2, 1, &mut rgb).unwrap();
        assert_eq!(rgb, [7, 7, 7, 200, 200, 200]);
        let mut bgr = [0u8; 6];
        swap_rb(Plane::new(&[1, 2, 3, 4, 5, 6], 6), 2, 1, &mut bgr).unwrap();
        assert_eq!(bgr, [3, 2, 1, 6, 5, 4]);
        let mut back = [0u8; 6];
        swap_rb(Plane::new(&bgr, 6), 2, 1, &mut back).unwrap();
        assert_eq!(back, [1, 2, 3, 4, 5, 6]);
    }

    /// A `w`×`h` mosaic of a scene whose colour at (x, y) is `scene(x, y)`, sampled through `pattern`.
    fn mosaic(
        w: usize,
        h: usize,
        pattern: BayerPattern,
        scene: impl Fn(usize, usize) -> [u8; 3],
    ) -> Vec<u8> {
        let sites: [[usize; 2]; 2] = match pattern {
            BayerPattern::Rggb => [[0, 1], [1, 2]],
            BayerPattern::Bggr => [[2, 1], [1, 0]],
            BayerPattern::Grbg => [[1, 0], [2, 1]],
            BayerPattern::Gbrg => [[1, 2], [0, 1]],
        };
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .map(|(x, y)| scene(x, y)[sites[y & 1][x & 1]])
            .collect()
    }

    #[test]
    fn bayer_of_a_uniform_scene_is_uniform_for_every_pattern() {
        for pattern in [
            BayerPattern::Rggb,
            BayerPattern::Bggr,
            BayerPattern::Grbg,
            BayerPattern::Gbrg,
        ] {
            let (w, h) = (6, 4);
            let raw = mosaic(w, h, pattern, |_, _| [200, 100, 50]);
            let mut rgb = vec![0u8; w * h * 3];
            bayer_to_rgb(Plane::new(&raw, w), w, h, pattern, &mut rgb).unwrap();
            assert!(
                rgb.chunks_exact(3).all(|p| p == [200, 100, 50]),
                "{pattern:?}: {rgb:?}"
            );
        }
    }

    #[test]
    fn bayer_interpolates_a_horizontal_ramp_bilinearly() {
        // Every channel equals 10·x: interior pixels are exact, whatever site they sit on.
        let (w, h) = (6, 4);
        let raw = mosaic(w, h, BayerPattern::Rggb, |x, _| [10 * x as u8; 3]);
        let mut rgb = vec![0u8; w * h * 3];
        bayer_to_rgb(Plane::new(&raw, w), w, h, BayerPattern::Rggb, &mut rgb).unwrap();
        for y in 0..h {
            for x in 1..w - 1 {
                let px = &rgb[(y * w + x) * 3..][..3];
                assert_eq!(px, [10 * x as u8; 3], "({x}, {y})");
            }
        }
        // A hand-worked site: (1, 1) is blue in RGGB; red is the mean of its 4 diagonal reds (x 0 and 2 → 10),
        // green the mean of its 4 cross greens (x 1, 1, 0, 2 → 10).
        assert_eq!(&rgb[(w + 1) * 3..][..3], &[10, 10, 10]);
    }

    fn encode_jpeg(w: u16, h: u16, rgb: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let encoder = jpeg_encoder::Encoder::new(&mut out, 100);
        encoder
            .encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
            .unwrap();
        out
    }

    /// Removes every DHT (Huffman table) segment, as many webcams' MJPEG frames come.
    fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut i = 2;
        while i + 4 <= jpeg.len() {
            let marker = jpeg[i + 1];
            if marker == 0xDA {
                out.extend_from_slice(&jpeg[i..]);
                break;
            }
            let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
            if marker != 0xC4 {
                out.extend_from_slice(&jpeg[i..i + 2 + len]);
            }
            i += 2 + len;
        }
        out
    }

    #[test]
    fn mjpeg_decodes_into_the_frame_with_and_without_huffman_tables() {
        // 16x16: four flat 8x8 quadrants (red, green, blue, gray) survive JPEG at quality 100 within a few
        // levels.
        let (w, h) = (16usize, 16usize);
        let colour = |x: usize, y: usize| match (x / 8, y / 8) {
            (0, 0) => [220u8, 30, 30],
            (1, 0) => [30, 220, 30],
            (0, 1) => [30, 30, 220],
            _ => [128, 128, 128],
        };
        let rgb: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| colour(x, y)))
            .collect();
        let jpeg = encode_jpeg(w as u16, h as u16, &rgb);
        assert!(jpeg.len() < 1024, "a tiny fixture: {} bytes", jpeg.len());
        let mut decoder = MjpegDecoder::new(w, h, 4096);
        let mut out = vec![0u8; w * h * 3];
        decoder.decode(&jpeg, &mut out).unwrap();
        // Chroma is subsampled 2x2 at the quadrant edges, so compare quadrant centres.
        for (x, y) in [(3, 3), (12, 3), (3, 12), (12, 12)] {
            let px = &out[(y * w + x) * 3..][..3];
            assert!(
                near(px, &colour(x, y), 6),
                "({x},{y}): {px:?} vs {:?}",
                colour(x, y)
            );
        }
        let bare = strip_dht(&jpeg);
        assert!(
            bare.len() < jpeg.len(),
            "the fixture had Huffman tables to strip"
        );
        assert!(has_huffman_tables(&jpeg) && !has_huffman_tables(&bare));
        let mut out2 = vec![0u8; w * h * 3];
        decoder.decode(&bare, &mut out2).unwrap();
        assert_eq!(
            out, out2,
            "the default MJPEG tables are the standard ones the encoder wrote"
        );
    }

    #[test]
    fn mjpeg_refuses_a_wrong_size_and_garbage() {
        let jpeg = encode_jpeg(8, 8, &[90u8; 8 * 8 * 3]);
        let mut out = vec![0u8; 16 * 8 * 3];
        assert!(matches!(
            MjpegDecoder::new(16, 8, 4096).decode(&jpeg, &mut out),
            Err(ConvertError::JpegSize {
                got_w: 8,
                got_h: 8,
                ..
            }) | Err(ConvertError::Jpeg(_))
        ));
        let mut decoder = MjpegDecoder::new(8, 8, 4096);
        let mut out = vec![0u8; 8 * 8 * 3];
        assert!(matches!(
            decoder.decode(&[0xFF, 0xD8, 1, 2, 3], &mut out),
            Err(ConvertError::Jpeg(_))
        ));
        assert!(matches!(
            decoder.decode(&[], &mut out),
            Err(ConvertError::Jpeg(_))
        ));
        // A frame cut short (a USB packet lost) may decode with a gray tail or fail; it never panics.
        let _ = decoder.decode(&jpeg[..jpeg.len() / 2], &mut out);
    }
}
