//! H.264 parameter parsing for the fMP4 muxer: the AVCDecoderConfigurationRecord (avcC) and the picture size and
//! profile of its sequence parameter set (no I/O).

use bytes::Bytes;

/// Why an avcC record or an SPS could not be read; each names the field that was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AvcError {
    /// The AVCDecoderConfigurationRecord's framing (version, counts, lengths) is wrong or cut short.
    #[error("avcC record: {0}")]
    Record(String),
    /// The sequence parameter set is cut short or has a value out of range.
    #[error("SPS: {0}")]
    Sps(String),
}

/// The parts of an AVCDecoderConfigurationRecord (ISO/IEC 14496-15 5.3.3.1) the muxer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcRecord {
    /// Bytes of the NAL unit length prefix in samples (1, 2 or 4).
    pub nal_length_size: u8,
    /// The sequence parameter set NAL units, in record order (at least one).
    pub sps: Vec<Bytes>,
    /// The picture parameter set NAL units, in record order.
    pub pps: Vec<Bytes>,
}

/// Reads an avcC record; `record` is shared, so the parameter sets are slices of it (no copy).
pub fn parse_record(record: &Bytes) -> Result<AvcRecord, AvcError> {
    let bad = |why: &str| AvcError::Record(why.to_string());
    if record.len() < 7 {
        return Err(AvcError::Record(format!("{} bytes, the fixed part alone is 7", record.len())));
    }
    if record[0] != 1 {
        return Err(AvcError::Record(format!("configurationVersion {} (only 1 exists)", record[0])));
    }
    let nal_length_size = (record[4] & 3) + 1;
    if nal_length_size == 3 {
        return Err(bad("lengthSizeMinusOne 2 (3-byte NAL lengths are not allowed)"));
    }
    let mut pos = 5;
    let sets = |count: usize, what: &str, pos: &mut usize| -> Result<Vec<Bytes>, AvcError> {
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let len = record
                .get(*pos..*pos + 2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
                .ok_or_else(|| AvcError::Record(format!("truncated before the length of {what} {i}")))?;
            let start = *pos + 2;
            if start + len > record.len() || len == 0 {
                return Err(AvcError::Record(format!("{what} {i} of {len} bytes does not fit the record")));
            }
            out.push(record.slice(start..start + len));
            *pos = start + len;
        }
        Ok(out)
    };
    let sps_count = (record[5] & 0x1F) as usize;
    pos += 1;
    let sps = sets(sps_count, "SPS", &mut pos)?;
    if sps.is_empty() {
        return Err(bad("no SPS"));
    }
    let pps_count = *record.get(pos).ok_or_else(|| bad("truncated before numOfPictureParameterSets"))? as usize;
    pos += 1;
    let pps = sets(pps_count, "PPS", &mut pos)?;
    // High profiles may append chroma format and bit depth fields after the PPS; the muxer copies the record whole.
    Ok(AvcRecord { nal_length_size, sps, pps })
}

/// What the muxer takes from a sequence parameter set (ITU-T H.264 7.3.2.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sps {
    /// profile_idc (66 Baseline, 77 Main, 100 High...).
    pub profile_idc: u8,
    /// constraint_set0..5 flags and the reserved bits: the "profile compatibility" byte of RFC 6381.
    pub constraint_flags: u8,
    /// level_idc: ten times the level (31 is level 3.1).
    pub level_idc: u8,
    /// Displayed width in pixels, after frame cropping.
    pub width: u32,
    /// Displayed height in pixels, after frame cropping (frames, not fields, for interlaced video).
    pub height: u32,
}

impl Sps {
    /// The RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec(&self) -> String {
        format!("avc1.{:02x}{:02x}{:02x}", self.profile_idc, self.constraint_flags, self.level_idc)
    }
}

/// Reads an SPS NAL unit (with its one-byte NAL header, emulation prevention bytes still in).
pub fn parse_sps(nal: &[u8]) -> Result<Sps, AvcError> {
    let bad = |why: String| AvcError::Sps(why);
    if nal.len() < 4 {
        return Err(bad(format!("{} bytes, too short to hold a profile and level", nal.len())));
    }
    if nal[0] & 0x1F != 7 {
        return Err(bad(format!("NAL unit type {} is not an SPS (7)", nal[0] & 0x1F)));
    }
    let rbsp = unescape(&nal[1..]);
    if rbsp.len() < 3 {
        return Err(bad("too short to hold a profile and level".into()));
    }
    let (profile_idc, constraint_flags, level_idc) = (rbsp[0], rbsp[1], rbsp[2]);
    let mut r = Bits::new(&rbsp[3..]);
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return Err(bad(format!("chroma_format_idc {chroma_format_idc} (0 to 3 exist)")));
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.bit()? == 1;
        }
        r.ue()?; // bit_depth_luma_minus8
        r.ue()?; // bit_depth_chroma_minus8
        r.bit()?; // qpprime_y_zero_transform_bypass_flag
        if r.bit()? == 1 {
            // seq_scaling_matrix_present_flag: the lists are skipped, but they must be read to find what follows.
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            r.bit()?; // delta_pic_order_always_zero_flag
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return Err(bad(format!("num_ref_frames_in_pic_order_cnt_cycle {cycle} (at most 255)")));
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        t => return Err(bad(format!("pic_order_cnt_type {t} (0 to 2 exist)"))),
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = r.ue()? as u64 + 1;
    let height_map_units = r.ue()? as u64 + 1;
    let frame_mbs_only = r.bit()? as u64;
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field_flag
    }
    r.bit()?; // direct_8x8_inference_flag
    let (mut crop_x, mut crop_y) = (0u64, 0u64);
    if r.bit()? == 1 {
        // Offsets count in chroma sample units (Table 6-1 and equations 7-19 to 7-22).
        let (left, right, top, bottom) = (r.ue()? as u64, r.ue()? as u64, r.ue()? as u64, r.ue()? as u64);
        let chroma_array_type = if separate_colour_plane { 0 } else { chroma_format_idc };
        let (sub_w, sub_h) = match chroma_array_type {
            1 => (2, 2),
            2 => (2, 1),
            _ => (1, 1),
        };
        crop_x = sub_w * (left + right);
        crop_y = sub_h * (2 - frame_mbs_only) * (top + bottom);
    }
    let coded_w = width_mbs * 16;
    let coded_h = (2 - frame_mbs_only) * height_map_units * 16;
    if crop_x >= coded_w || crop_y >= coded_h {
        return Err(bad(format!("cropping {crop_x}x{crop_y} leaves nothing of the {coded_w}x{coded_h} picture")));
    }
    let (width, height) = (coded_w - crop_x, coded_h - crop_y);
    if width > u16::MAX as u64 || height > u16::MAX as u64 {
        return Err(bad(format!("picture {width}x{height} is larger than 65535 pixels on a side")));
    }
    Ok(Sps { profile_idc, constraint_flags, level_idc, width: width as u32, height: height as u32 })
}

/// Reads past one scaling_list() (H.264 7.3.2.1.1.1).
fn skip_scaling_list(r: &mut Bits, size: usize) -> Result<(), AvcError> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            let delta = r.se()?;
            if !(-128..=127).contains(&delta) {
                return Err(AvcError::Sps(format!("delta_scale {delta} (-128 to 127)")));
            }
            next = (last + delta + 256) % 256;
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// The RBSP of a NAL unit payload: emulation prevention bytes (the 3 of 00 00 03) removed.
fn unescape(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len());
    let mut zeros = 0;
    for &b in payload {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

/// A big-endian bit reader with Exp-Golomb codes; reading past the end is an error, never a panic.
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn bit(&mut self) -> Result<u32, AvcError> {
        let byte = self.data.get(self.pos / 8).ok_or_else(|| AvcError::Sps("ends in the middle of a field".into()))?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(b as u32)
    }

    /// ue(v): an unsigned Exp-Golomb code of up to 32 bits of value.
    fn ue(&mut self) -> Result<u32, AvcError> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(AvcError::Sps("an Exp-Golomb code longer than 32 bits".into()));
            }
        }
        let mut v: u64 = 1;
        for _ in 0..zeros {
            v = (v << 1) | self.bit()? as u64;
        }
        Ok((v - 1) as u32)
    }

    /// se(v): a signed Exp-Golomb code.
    fn se(&mut self) -> Result<i64, AvcError> {
        let k = self.ue()? as i64;
        Ok(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// SPS NAL units x264 (through ffmpeg) wrote for these pictures.
    #[test]
    fn real_sps() {
        let cases = [
            // 1920x1080 High 4.0: 1088 coded lines, 8 cropped.
            ("67640028acd940780227e5c044000003000400000300f03c60c658", 1920, 1080, "avc1.640028"),
            // 640x360 Constrained Baseline 3.0: 368 coded lines, 8 cropped.
            ("6742c01ed900a02ff970110000030001000003003c0f162e48", 640, 360, "avc1.42c01e"),
            // 1280x720 High 3.1, no cropping.
            ("6764001facd9405005bb0110000003001000000303c0f1831960", 1280, 720, "avc1.64001f"),
            // 720x576 interlaced (frame_mbs_only_flag 0): 18 map units of 32 lines.
            ("6764001facd940b424d80880000003008000001e0f8b16cb", 720, 576, "avc1.64001f"),
            // 642x362 High 4:4:4 Predictive: chroma_format_idc 3, cropping in single pixels (14 right, 6 bottom).
            ("67f4001e919b281485fc7cf80880000003008000001e078b16cb", 642, 362, "avc1.f4001e"),
        ];
        for (h, w, ht, codec) in cases {
            let sps = parse_sps(&hex(h)).unwrap();
            assert_eq!((sps.width, sps.height), (w, ht), "{h}");
            assert_eq!(sps.codec(), codec, "{h}");
        }
    }

    /// A bit writer for hand-made SPS (fields an encoder at hand does not produce).
    struct W(Vec<bool>);
    impl W {
        fn bits(&mut self, v: u32, n: u32) {
            for i in (0..n).rev() {
                self.0.push((v >> i) & 1 == 1);
            }
        }
        fn ue(&mut self, v: u32) {
            let x = v + 1;
            let n = 32 - x.leading_zeros();
            self.bits(0, n - 1);
            self.bits(x, n);
        }
        fn se(&mut self, v: i32) {
            self.ue(if v > 0 { 2 * v as u32 - 1 } else { (-2 * v) as u32 });
        }
        fn nal(mut self) -> Vec<u8> {
            self.0.push(true); // rbsp_stop_one_bit
            while !self.0.len().is_multiple_of(8) {
                self.0.push(false);
            }
            let bytes: Vec<u8> = self.0.chunks(8).map(|c| c.iter().fold(0u8, |a, &b| (a << 1) | b as u8)).collect();
            // Escape as an encoder would (00 00 0x with x <= 3 gets an 03 inserted).
            let mut out = vec![0x67];
            let mut zeros = 0;
            for b in bytes {
                if zeros >= 2 && b <= 3 {
                    out.push(3);
                    zeros = 0;
                }
                zeros = if b == 0 { zeros + 1 } else { 0 };
                out.push(b);
            }
            out
        }
    }

    #[test]
    fn scaling_lists_poc_type_1_and_4_2_2_cropping() {
        let mut w = W(vec![]);
        w.bits(122, 8); // High 4:2:2
        w.bits(0, 8);
        w.bits(40, 8);
        w.ue(0); // sps id
        w.ue(2); // chroma_format_idc 4:2:2
        w.ue(0);
        w.ue(0);
        w.bits(0, 1);
        w.bits(1, 1); // seq_scaling_matrix_present_flag
        for i in 0..8 {
            if i == 1 || i == 6 {
                w.bits(1, 1);
                // A list that ends early with a delta to zero, and one with all 64 deltas.
                let n = if i == 1 { 3 } else { 64 };
                for j in 0..n {
                    w.se(if i == 1 && j == 2 {
                        -(8 + 5 - 3)
                    } else if j % 2 == 0 {
                        5
                    } else {
                        -3
                    });
                }
            } else {
                w.bits(0, 1);
            }
        }
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(1); // pic_order_cnt_type 1
        w.bits(0, 1);
        w.se(-2);
        w.se(1);
        w.ue(3);
        w.se(4);
        w.se(-4);
        w.se(0);
        w.ue(4); // max_num_ref_frames
        w.bits(0, 1);
        w.ue(119); // 1920
        w.ue(67); // 1088
        w.bits(1, 1); // frame_mbs_only
        w.bits(1, 1);
        w.bits(1, 1); // cropping: 4:2:2 has 2-pixel horizontal and 1-line vertical units
        w.ue(1);
        w.ue(2);
        w.ue(3);
        w.ue(5);
        let sps = parse_sps(&w.nal()).unwrap();
        assert_eq!((sps.width, sps.height), (1920 - 6, 1088 - 8));
        assert_eq!(sps.codec(), "avc1.7a0028");
    }

    /// Any bytes after the SPS NAL header give an SPS or an error, never a panic (huge Exp-Golomb values included).
    #[test]
    fn sps_from_any_bytes() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let real = hex("67640028acd940780227e5c044000003000400000300f03c60c658");
        for i in 0..20_000 {
            let mut nal: Vec<u8> = if i % 2 == 0 {
                (0..rand() % 40).map(|_| rand() as u8).collect()
            } else {
                let mut n = real.clone();
                let at = rand() as usize % n.len();
                n[at] = rand() as u8;
                n
            };
            if let Some(h) = nal.first_mut() {
                *h = 0x67;
            }
            if let Ok(sps) = parse_sps(&nal) {
                assert!(sps.width > 0 && sps.height > 0 && sps.width <= 65535 && sps.height <= 65535);
            }
        }
        // Width in macroblocks near 2^32: refused as too large, not overflowed.
        let mut w = W(vec![]);
        w.bits(66, 8);
        w.bits(0, 8);
        w.bits(30, 8);
        w.ue(0);
        w.ue(0);
        w.ue(2);
        w.ue(1);
        w.bits(0, 1);
        w.ue(u32::MAX - 1);
        w.ue(10);
        w.bits(1, 1);
        w.bits(1, 1);
        w.bits(0, 1);
        assert_eq!(
            parse_sps(&w.nal()).unwrap_err().to_string(),
            "SPS: picture 68719476720x176 is larger than 65535 pixels on a side"
        );
    }

    #[test]
    fn records() {
        let sps = hex("6742c01ed900a02ff970110000030001000003003c0f162e48");
        let mut rec = vec![1, 0x42, 0xc0, 0x1e, 0xff, 0xe1];
        rec.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        rec.extend_from_slice(&sps);
        rec.extend_from_slice(&[1, 0, 4, 0x68, 0xce, 0x3c, 0x80]);
        let r = parse_record(&Bytes::from(rec.clone())).unwrap();
        assert_eq!(r.nal_length_size, 4);
        assert_eq!(r.sps, vec![Bytes::from(sps.clone())]);
        assert_eq!(r.pps, vec![Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80])]);
        // Truncated anywhere: an error naming the record, never a panic.
        for n in 0..rec.len() {
            let e = parse_record(&Bytes::from(rec[..n].to_vec())).unwrap_err();
            assert!(matches!(e, AvcError::Record(_)), "{n}: {e}");
        }
        let mut v2 = rec.clone();
        v2[0] = 2;
        assert_eq!(
            parse_record(&Bytes::from(v2)).unwrap_err().to_string(),
            "avcC record: configurationVersion 2 (only 1 exists)"
        );
        let mut none = rec[..6].to_vec();
        none[5] = 0xe0;
        none.push(0);
        assert_eq!(parse_record(&Bytes::from(none)).unwrap_err().to_string(), "avcC record: no SPS");
        // A truncated SPS is refused by the SPS parser.
        for n in 0..8 {
            assert!(parse_sps(&sps[..n]).is_err(), "{n}");
        }
        assert_eq!(parse_sps(&[0x68, 0, 0, 0]).unwrap_err().to_string(), "SPS: NAL unit type 8 is not an SPS (7)");
    }
}
