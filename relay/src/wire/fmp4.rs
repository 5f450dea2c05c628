//! Fragmented MP4 for HLS: the init segment and the fragments (moof + mdat) of H.264 + AAC, from FLV payloads.
//!
//! Pure and deterministic: the same inputs give the same bytes on every relay (no clock, no random, no per-process
//! state), which is what lets every edge serve byte-identical segments. Boxes follow ISO/IEC 14496-12 (ISOBMFF) and
//! 14496-15 (avcC); both tracks count time in milliseconds, the relay's timeline unit.

use bytes::{BufMut, Bytes, BytesMut};

use super::avc::{self, AvcError};
use super::proto::{Media, MediaKind};

/// The video track's id in every init segment and fragment, whether or not the stream has audio.
pub const VIDEO_TRACK: u32 = 1;
/// The audio track's id in every init segment and fragment, whether or not the stream has video.
pub const AUDIO_TRACK: u32 = 2;
/// Both tracks use a 1000 Hz timescale (the relay's timeline is in milliseconds).
pub const TIMESCALE: u32 = 1000;

/// An H.264 track's decoder configuration, from an FLV AVC sequence header.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoConfig {
    /// The AVCDecoderConfigurationRecord exactly as the publisher sent it (copied into the avcC box).
    pub avcc: Bytes,
    /// Displayed width in pixels (the first SPS's, after cropping).
    pub width: u16,
    /// Displayed height in pixels (the first SPS's, after cropping).
    pub height: u16,
    /// The RFC 6381 codec string for the playlist's CODECS attribute, e.g. `avc1.64001f`.
    pub codec: String,
}

/// An AAC track's decoder configuration, from an FLV AAC sequence header.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioConfig {
    /// The AudioSpecificConfig exactly as the publisher sent it (copied into the esds box).
    pub asc: Bytes,
    /// The AudioSpecificConfig's sampling frequency in Hz (for HE-AAC, the core's; decoders read the rest from the
    /// ASC).
    pub sample_rate: u32,
    /// Channel count from the channel configuration (2 when the ASC defers it to a program config element).
    pub channels: u16,
    /// The RFC 6381 codec string, `mp4a.40.N` with N the audio object type (2 for AAC-LC).
    pub codec: String,
}

/// Why a sequence header cannot become an init segment.
#[derive(Debug, thiserror::Error)]
pub enum Fmp4Error {
    /// The stream's codec has no fMP4 mapping here; `codec` names it (HEVC, MP3, Speex...).
    #[error("unsupported {track} codec {codec}: HLS is served for H.264 video and AAC audio only")]
    Unsupported {
        /// "video" or "audio".
        track: &'static str,
        /// The codec's name as FLV or enhanced RTMP signals it.
        codec: String,
    },
    /// The payload is not a sequence header, or its bytes are cut short or out of range; `why` says which.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// The header or structure that was read.
        what: &'static str,
        /// What was wrong with it.
        why: String,
    },
    /// The AVCDecoderConfigurationRecord or its SPS could not be read.
    #[error("malformed H.264 decoder configuration: {0}")]
    Avc(#[from] AvcError),
}

/// Reads an FLV AVC sequence header payload (codec id 7, AVCPacketType 0): its avcC record and first SPS.
pub fn video_config(flv_video_header_payload: &[u8]) -> Result<VideoConfig, Fmp4Error> {
    let p = flv_video_header_payload;
    let what = "FLV video sequence header";
    let first = *p.first().ok_or(Fmp4Error::Malformed { what, why: "empty payload".into() })?;
    if first & 0x80 != 0 {
        // Enhanced RTMP: a FourCC follows instead of a codec id.
        let fourcc = p.get(1..5).map(|f| String::from_utf8_lossy(f).into_owned()).unwrap_or_default();
        let name = match fourcc.as_str() {
            "hvc1" => " (HEVC)",
            "av01" => " (AV1)",
            "vp09" => " (VP9)",
            _ => "",
        };
        return Err(Fmp4Error::Unsupported { track: "video", codec: format!("enhanced RTMP {fourcc:?}{name}") });
    }
    let codec = match first & 0x0F {
        7 => None,
        2 => Some("Sorenson H.263".to_string()),
        3 => Some("Screen video".to_string()),
        4 => Some("On2 VP6".to_string()),
        5 => Some("On2 VP6 with alpha".to_string()),
        6 => Some("Screen video v2".to_string()),
        12 => Some("HEVC (FLV codec id 12)".to_string()),
        id => Some(format!("FLV codec id {id}")),
    };
    if let Some(codec) = codec {
        return Err(Fmp4Error::Unsupported { track: "video", codec });
    }
    if p.len() < 5 {
        return Err(Fmp4Error::Malformed { what, why: format!("{} bytes, the AVC header alone is 5", p.len()) });
    }
    if p[1] != 0 {
        return Err(Fmp4Error::Malformed { what, why: format!("AVCPacketType {} is not a sequence header (0)", p[1]) });
    }
    let avcc = Bytes::copy_from_slice(&p[5..]);
    let record = avc::parse_record(&avcc)?;
    let sps = avc::parse_sps(&record.sps[0])?;
    // parse_sps refuses sizes above 65535.
    Ok(VideoConfig { width: sps.width as u16, height: sps.height as u16, codec: sps.codec(), avcc })
}

/// Reads an FLV AAC sequence header payload (sound format 10, AACPacketType 0): its AudioSpecificConfig.
pub fn audio_config(flv_audio_header_payload: &[u8]) -> Result<AudioConfig, Fmp4Error> {
    let p = flv_audio_header_payload;
    let what = "FLV audio sequence header";
    let first = *p.first().ok_or(Fmp4Error::Malformed { what, why: "empty payload".into() })?;
    let codec = match first >> 4 {
        10 => None,
        0 => Some("linear PCM".to_string()),
        1 => Some("ADPCM".to_string()),
        2 => Some("MP3".to_string()),
        3 => Some("linear PCM (little endian)".to_string()),
        4..=6 => Some("Nellymoser".to_string()),
        7 => Some("G.711 A-law".to_string()),
        8 => Some("G.711 mu-law".to_string()),
        9 => Some("enhanced RTMP (FourCC) audio".to_string()),
        11 => Some("Speex".to_string()),
        14 => Some("MP3 8 kHz".to_string()),
        15 => Some("device-specific sound".to_string()),
        f => Some(format!("FLV sound format {f}")),
    };
    if let Some(codec) = codec {
        return Err(Fmp4Error::Unsupported { track: "audio", codec });
    }
    if p.len() < 2 {
        return Err(Fmp4Error::Malformed { what, why: "no AACPacketType".into() });
    }
    if p[1] != 0 {
        return Err(Fmp4Error::Malformed { what, why: format!("AACPacketType {} is not a sequence header (0)", p[1]) });
    }
    let asc = Bytes::copy_from_slice(&p[2..]);
    let (object_type, sample_rate, channels) = parse_asc(&asc)?;
    Ok(AudioConfig { asc, sample_rate, channels, codec: format!("mp4a.40.{object_type}") })
}

/// Audio object type, sampling frequency and channel count of an AudioSpecificConfig (ISO/IEC 14496-3 1.6.2.1).
fn parse_asc(asc: &[u8]) -> Result<(u32, u32, u16), Fmp4Error> {
    let what = "AAC AudioSpecificConfig";
    // The fields read here fit in the first 6 bytes (5 + 6 + 4 + 24 + 4 bits at most).
    let mut word = 0u64;
    for (i, b) in asc.iter().take(8).enumerate() {
        word |= (*b as u64) << (56 - 8 * i);
    }
    let have = asc.len().min(8) * 8;
    let mut pos = 0;
    let mut take = |n: usize| -> Result<u32, Fmp4Error> {
        if pos + n > have {
            return Err(Fmp4Error::Malformed {
                what,
                why: format!("{} bytes end in the middle of a field", asc.len()),
            });
        }
        let v = (word << pos) >> (64 - n);
        pos += n;
        Ok(v as u32)
    };
    let mut object_type = take(5)?;
    if object_type == 31 {
        object_type = 32 + take(6)?;
    }
    if object_type == 0 {
        return Err(Fmp4Error::Malformed { what, why: "audio object type 0 (null)".into() });
    }
    const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
    let sample_rate = match take(4)? {
        15 => take(24)?,
        i if (i as usize) < RATES.len() => RATES[i as usize],
        i => return Err(Fmp4Error::Malformed { what, why: format!("reserved sampling frequency index {i}") }),
    };
    if sample_rate == 0 {
        return Err(Fmp4Error::Malformed { what, why: "explicit sampling frequency 0".into() });
    }
    let channels = match take(4)? {
        // 0: the layout is in a program config element; decoders read it from the ASC, the box only informs.
        0 => 2,
        c @ 1..=6 => c as u16,
        7 | 12 | 14 => 8,
        11 => 7,
        13 => 24,
        c => return Err(Fmp4Error::Malformed { what, why: format!("reserved channel configuration {c}") }),
    };
    Ok((object_type, sample_rate, channels))
}

/// Appends a box: size, type, then what `body` writes; the size is patched in afterwards.
fn boxed(out: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let start = out.len();
    out.put_u32(0);
    out.put_slice(kind);
    body(out);
    let size = (out.len() - start) as u32;
    out[start..start + 4].copy_from_slice(&size.to_be_bytes());
}

/// Appends a full box (a box with version and flags).
fn full(out: &mut BytesMut, kind: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut BytesMut)) {
    boxed(out, kind, |b| {
        b.put_u32((version as u32) << 24 | flags);
        body(b);
    });
}

/// The unity transformation matrix of mvhd and tkhd.
fn matrix(b: &mut BytesMut) {
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        b.put_u32(v);
    }
}

/// The init segment (ftyp + moov) for the tracks present; fragments from [`fragment`] follow it.
///
/// Brands: `iso6` (major and compatible) and `mp41`. CMAF's `cmfc` is left out on purpose: a CMAF track file holds
/// one track and ours carries video and audio together. All creation/modification times and durations are 0, so
/// the bytes depend on the configurations only. Pass at least one track.
pub fn init_segment(video: Option<&VideoConfig>, audio: Option<&AudioConfig>) -> Bytes {
    let mut b = BytesMut::with_capacity(1024);
    boxed(&mut b, b"ftyp", |b| {
        b.put_slice(b"iso6");
        b.put_u32(0);
        b.put_slice(b"iso6mp41");
    });
    boxed(&mut b, b"moov", |b| {
        full(b, b"mvhd", 0, 0, |b| {
            b.put_u32(0); // creation_time
            b.put_u32(0); // modification_time
            b.put_u32(TIMESCALE);
            b.put_u32(0); // duration: unknown (fragmented)
            b.put_u32(0x0001_0000); // rate 1.0
            b.put_u16(0x0100); // volume 1.0
            b.put_slice(&[0; 10]);
            matrix(b);
            b.put_slice(&[0; 24]); // pre_defined
            b.put_u32(AUDIO_TRACK + 1); // next_track_ID
        });
        if let Some(v) = video {
            trak(b, VIDEO_TRACK, |b| video_entry(b, v), Some((v.width, v.height)));
        }
        if let Some(a) = audio {
            trak(b, AUDIO_TRACK, |b| audio_entry(b, a), None);
        }
        boxed(b, b"mvex", |b| {
            for (track, present) in [(VIDEO_TRACK, video.is_some()), (AUDIO_TRACK, audio.is_some())] {
                if present {
                    full(b, b"trex", 0, 0, |b| {
                        b.put_u32(track);
                        b.put_u32(1); // default_sample_description_index
                        b.put_u32(0); // default_sample_duration
                        b.put_u32(0); // default_sample_size
                        b.put_u32(0); // default_sample_flags
                    });
                }
            }
        });
    });
    b.freeze()
}

/// One trak: `size` is the video's display size (None for audio); `entry` writes the sample entry into stsd.
fn trak(b: &mut BytesMut, track: u32, entry: impl FnOnce(&mut BytesMut), size: Option<(u16, u16)>) {
    let video = size.is_some();
    boxed(b, b"trak", |b| {
        // Flags: track_enabled | track_in_movie.
        full(b, b"tkhd", 0, 3, |b| {
            b.put_u32(0); // creation_time
            b.put_u32(0); // modification_time
            b.put_u32(track);
            b.put_u32(0); // reserved
            b.put_u32(0); // duration
            b.put_slice(&[0; 8]);
            b.put_u16(0); // layer
            b.put_u16(0); // alternate_group
            b.put_u16(if video { 0 } else { 0x0100 }); // volume
            b.put_u16(0);
            matrix(b);
            let (w, h) = size.unwrap_or((0, 0));
            b.put_u32((w as u32) << 16); // 16.16 fixed point
            b.put_u32((h as u32) << 16);
        });
        boxed(b, b"mdia", |b| {
            full(b, b"mdhd", 0, 0, |b| {
                b.put_u32(0); // creation_time
                b.put_u32(0); // modification_time
                b.put_u32(TIMESCALE);
                b.put_u32(0); // duration
                b.put_u16(0x55C4); // language "und", 5 bits per letter
                b.put_u16(0);
            });
            full(b, b"hdlr", 0, 0, |b| {
                b.put_u32(0); // pre_defined
                b.put_slice(if video { b"vide" } else { b"soun" });
                b.put_slice(&[0; 12]);
                b.put_slice(if video { b"VideoHandler\0" } else { b"SoundHandler\0" });
            });
            boxed(b, b"minf", |b| {
                if video {
                    full(b, b"vmhd", 0, 1, |b| b.put_slice(&[0; 8])); // graphicsmode copy, opcolor
                } else {
                    full(b, b"smhd", 0, 0, |b| b.put_u32(0)); // balance, reserved
                }
                boxed(b, b"dinf", |b| {
                    full(b, b"dref", 0, 0, |b| {
                        b.put_u32(1);
                        full(b, b"url ", 0, 1, |_| {}); // flag 1: the media is in this file
                    });
                });
                boxed(b, b"stbl", |b| {
                    full(b, b"stsd", 0, 0, |b| {
                        b.put_u32(1);
                        entry(b);
                    });
                    // The samples are all in fragments: empty tables.
                    full(b, b"stts", 0, 0, |b| b.put_u32(0));
                    full(b, b"stsc", 0, 0, |b| b.put_u32(0));
                    full(b, b"stsz", 0, 0, |b| b.put_slice(&[0; 8]));
                    full(b, b"stco", 0, 0, |b| b.put_u32(0));
                });
            });
        });
    });
}

/// The avc1 sample entry with the publisher's avcC record.
fn video_entry(b: &mut BytesMut, v: &VideoConfig) {
    boxed(b, b"avc1", |b| {
        b.put_slice(&[0; 6]);
        b.put_u16(1); // data_reference_index
        b.put_slice(&[0; 16]); // pre_defined, reserved
        b.put_u16(v.width);
        b.put_u16(v.height);
        b.put_u32(0x0048_0000); // 72 dpi
        b.put_u32(0x0048_0000);
        b.put_u32(0);
        b.put_u16(1); // frame_count
        b.put_slice(&[0; 32]); // compressorname
        b.put_u16(0x0018); // depth
        b.put_i16(-1);
        boxed(b, b"avcC", |b| b.put_slice(&v.avcc));
    });
}

/// The mp4a sample entry with an esds carrying the publisher's AudioSpecificConfig.
fn audio_entry(b: &mut BytesMut, a: &AudioConfig) {
    boxed(b, b"mp4a", |b| {
        b.put_slice(&[0; 6]);
        b.put_u16(1); // data_reference_index
        b.put_slice(&[0; 8]);
        b.put_u16(a.channels);
        b.put_u16(16); // samplesize
        b.put_u32(0);
        // 16.16 fixed point; rates above 65535 Hz do not fit and are written as 0 (the ASC has the real one).
        b.put_u32(if a.sample_rate <= 0xFFFF { a.sample_rate << 16 } else { 0 });
        full(b, b"esds", 0, 0, |b| {
            let mut dsi = BytesMut::new();
            descriptor(&mut dsi, 5, &a.asc);
            let mut dcd = BytesMut::new();
            dcd.put_u8(0x40); // objectTypeIndication: MPEG-4 audio
            dcd.put_u8(0x15); // streamType audio (5) << 2 | reserved 1
            dcd.put_slice(&[0; 3]); // bufferSizeDB
            dcd.put_u32(0); // maxBitrate: unknown
            dcd.put_u32(0); // avgBitrate: unknown
            dcd.put_slice(&dsi);
            let mut es = BytesMut::new();
            es.put_u16(AUDIO_TRACK as u16); // ES_ID
            es.put_u8(0); // no dependency, URL or OCR stream
            descriptor(&mut es, 4, &dcd);
            descriptor(&mut es, 6, &[2]); // SLConfigDescriptor, predefined 2 (MP4)
            descriptor(b, 3, &es);
        });
    });
}

/// Appends an MPEG-4 descriptor: tag, expandable size (7 bits a byte, high bit = more), body.
fn descriptor(b: &mut BytesMut, tag: u8, body: &[u8]) {
    b.put_u8(tag);
    let len = body.len();
    let mut groups = 1;
    while groups < 4 && len >> (7 * groups) != 0 {
        groups += 1;
    }
    for i in (0..groups).rev() {
        let more = if i > 0 { 0x80 } else { 0 };
        b.put_u8(more | ((len >> (7 * i)) & 0x7F) as u8);
    }
    b.put_slice(body);
}

/// One media sample of a fragment.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Decode time in ms on the stream's timeline.
    pub dts: u64,
    /// Time to the next sample's dts in ms.
    pub duration: u32,
    /// Presentation minus decode time in ms (negative allowed; 0 for audio).
    pub cts: i32,
    /// A random access point (an IDR picture; every AAC frame is one).
    pub keyframe: bool,
    /// AVCC NAL units (length-prefixed as in the avcC record), or a raw AAC frame.
    pub data: Bytes,
}

/// The sample inside an FLV video/audio payload (None for sequence headers, non-H.264/AAC payloads or payloads too
/// short): strips the FLV bytes, reads the composition time; shares the payload (no copy).
pub fn sample_of(media: &Media, dts: u64, duration: u32) -> Option<Sample> {
    let p = &media.payload;
    match media.kind {
        // Codec id 7 (AVC), AVCPacketType 1 (NAL units); frame type 5 (a command frame) carries no picture.
        MediaKind::Video if p.len() > 5 && p[0] & 0x0F == 7 && p[0] >> 4 != 5 && p[1] == 1 => {
            // 24-bit signed composition time: sign-extend through the top byte of an i32.
            let cts = i32::from_be_bytes([p[2], p[3], p[4], 0]) >> 8;
            Some(Sample { dts, duration, cts, keyframe: p[0] >> 4 == 1, data: p.slice(5..) })
        }
        // Sound format 10 (AAC), AACPacketType 1 (raw frame).
        MediaKind::Audio if p.len() > 2 && p[0] >> 4 == 10 && p[1] == 1 => {
            Some(Sample { dts, duration, cts: 0, keyframe: true, data: p.slice(2..) })
        }
        _ => None,
    }
}

/// One CMAF fragment: moof (mfhd with `sequence`, a traf per non-empty track: tfhd default-base-is-moof, tfdt
/// version 1 = first sample's dts, trun with data offset, per-sample duration, size, flags (sync / non-sync,
/// depends-on), composition offsets version 1 signed) then mdat. Returned as buffers to write in order: the header
/// bytes built here, then the samples' data slices as they are (no copy of the media).
///
/// The mdat holds the video samples then the audio samples. Samples of a track must be in decode order and contiguous
/// (each `dts` + `duration` = the next `dts`): the fragment stores only the first dts and the durations.
///
/// # Panics
/// If the samples' data add up to 2 GiB or more (trun's data offset is 32-bit signed); a live fragment is a few MB.
pub fn fragment(sequence: u32, video: &[Sample], audio: &[Sample]) -> Vec<Bytes> {
    let tracks = [(VIDEO_TRACK, video), (AUDIO_TRACK, audio)];
    let samples = video.len() + audio.len();
    let mut h = BytesMut::with_capacity(120 + 16 * samples);
    // Where each trun's data_offset goes, patched once the moof's size is known.
    let mut offsets = Vec::with_capacity(2);
    boxed(&mut h, b"moof", |b| {
        full(b, b"mfhd", 0, 0, |b| b.put_u32(sequence));
        for (track, s) in tracks {
            let Some(first) = s.first() else { continue };
            boxed(b, b"traf", |b| {
                full(b, b"tfhd", 0, 0x02_0000, |b| b.put_u32(track)); // default-base-is-moof
                full(b, b"tfdt", 1, 0, |b| b.put_u64(first.dts));
                // data-offset, sample duration, size, flags and composition time offset present.
                full(b, b"trun", 1, 0x0F01, |b| {
                    b.put_u32(s.len() as u32);
                    offsets.push(b.len());
                    b.put_i32(0);
                    for x in s {
                        b.put_u32(x.duration);
                        b.put_u32(x.data.len() as u32);
                        // sample_depends_on 2 (an I picture / audio frame) or 1 plus sample_is_non_sync_sample.
                        b.put_u32(if x.keyframe { 0x0200_0000 } else { 0x0101_0000 });
                        b.put_i32(x.cts);
                    }
                });
            });
        }
    });
    let data: usize = tracks.iter().flat_map(|(_, s)| s.iter()).map(|x| x.data.len()).sum();
    let mut at = h.len() + 8;
    let mut patch = offsets.into_iter();
    for (_, s) in tracks {
        if s.is_empty() {
            continue;
        }
        let pos = patch.next().expect("one offset per non-empty track");
        let offset = i32::try_from(at).expect("fragment data under 2 GiB");
        h[pos..pos + 4].copy_from_slice(&offset.to_be_bytes());
        at += s.iter().map(|x| x.data.len()).sum::<usize>();
    }
    h.put_u32(u32::try_from(data + 8).expect("fragment data under 2 GiB"));
    h.put_slice(b"mdat");
    let mut out = Vec::with_capacity(1 + samples);
    out.push(h.freeze());
    out.extend(tracks.iter().flat_map(|(_, s)| s.iter()).filter(|x| !x.data.is_empty()).map(|x| x.data.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// x264's 640x360 Constrained Baseline SPS and a PPS, as an FLV AVC sequence header payload.
    fn video_header() -> Vec<u8> {
        let sps = hex("6742c01ed900a02ff970110000030001000003003c0f162e48");
        let mut p = vec![0x17, 0, 0, 0, 0, 1, 0x42, 0xc0, 0x1e, 0xff, 0xe1];
        p.extend_from_slice(&(sps.len() as u16).to_be_bytes());
        p.extend_from_slice(&sps);
        p.extend_from_slice(&[1, 0, 4, 0x68, 0xce, 0x3c, 0x80]);
        p
    }

    /// A box tree: (type, offset of the box in the buffer, the box's bytes).
    #[derive(Debug)]
    struct Bx {
        kind: String,
        at: usize,
        body: Vec<u8>,
        children: Vec<Bx>,
    }

    const CONTAINERS: [&str; 9] = ["moov", "trak", "mdia", "minf", "dinf", "stbl", "mvex", "moof", "traf"];

    /// Parses boxes, asserting every size fits its parent exactly.
    fn parse(buf: &[u8], base: usize) -> Vec<Bx> {
        let mut out = vec![];
        let mut pos = 0;
        while pos < buf.len() {
            assert!(buf.len() - pos >= 8, "a box header cut at {}", base + pos);
            let size = u32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
            let kind = String::from_utf8(buf[pos + 4..pos + 8].to_vec()).unwrap();
            assert!(size >= 8 && pos + size <= buf.len(), "{kind} of {size} bytes at {} overruns", base + pos);
            let body = buf[pos + 8..pos + size].to_vec();
            let children = if CONTAINERS.contains(&kind.as_str()) {
                parse(&body, base + pos + 8)
            } else if kind == "stsd" || kind == "dref" {
                parse(&body[8..], base + pos + 16)
            } else {
                vec![]
            };
            out.push(Bx { kind, at: base + pos, body, children });
            pos += size;
        }
        out
    }

    fn find<'a>(boxes: &'a [Bx], path: &str) -> Vec<&'a Bx> {
        let (head, rest) = path.split_once('/').unwrap_or((path, ""));
        let hits = boxes.iter().filter(|b| b.kind == head);
        if rest.is_empty() {
            hits.collect()
        } else {
            hits.flat_map(|b| find(&b.children, rest)).collect()
        }
    }

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn video_headers() {
        let v = video_config(&video_header()).unwrap();
        assert_eq!((v.width, v.height, v.codec.as_str()), (640, 360, "avc1.42c01e"));
        assert_eq!(&v.avcc[..], &video_header()[5..]);
        let err = |p: &[u8]| video_config(p).unwrap_err().to_string();
        assert_eq!(
            err(&[0x1c, 0, 0, 0, 0]),
            "unsupported video codec HEVC (FLV codec id 12): HLS is served for H.264 video and AAC audio only"
        );
        assert_eq!(
            err(b"\x90hvc1"),
            "unsupported video codec enhanced RTMP \"hvc1\" (HEVC): HLS is served for H.264 video and AAC audio only"
        );
        assert!(err(&[0x12, 0]).starts_with("unsupported video codec Sorenson H.263"));
        assert_eq!(err(&[]), "malformed FLV video sequence header: empty payload");
        assert_eq!(err(&[0x17, 0]), "malformed FLV video sequence header: 2 bytes, the AVC header alone is 5");
        assert_eq!(
            err(&[0x17, 1, 0, 0, 0]),
            "malformed FLV video sequence header: AVCPacketType 1 is not a sequence header (0)"
        );
        let h = video_header();
        assert!(err(&h[..20]).starts_with("malformed H.264 decoder configuration: avcC record: SPS 0 of 25 bytes"));
    }

    #[test]
    fn audio_headers() {
        // AAC-LC (object type 2), frequency index 4 (44.1 kHz) or 3 (48 kHz), 2 channels.
        let a = audio_config(&[0xaf, 0, 0x12, 0x10]).unwrap();
        assert_eq!((a.sample_rate, a.channels, a.codec.as_str()), (44100, 2, "mp4a.40.2"));
        assert_eq!(&a.asc[..], &[0x12, 0x10]);
        let a = audio_config(&[0xaf, 0, 0x11, 0x90]).unwrap();
        assert_eq!((a.sample_rate, a.channels, a.codec.as_str()), (48000, 2, "mp4a.40.2"));
        // HE-AAC (object type 5) at 24 kHz mono with the SBR extension after it.
        let a = audio_config(&[0xaf, 0, 0x2b, 0x0a, 0x88, 0x00]).unwrap();
        assert_eq!((a.sample_rate, a.channels, a.codec.as_str()), (24000, 1, "mp4a.40.5"));
        // Explicit frequency (index 15, 24 bits) and an escaped object type (31 + 6 bits: 32 + 10 = 42, USAC).
        let a = audio_config(&[0xaf, 0, 0x17, 0x80, 0x2b, 0x11, 0x30]).unwrap();
        assert_eq!((a.sample_rate, a.channels), (22050, 6));
        let a = audio_config(&[0xaf, 0, 0xf9, 0x46, 0x80]).unwrap();
        assert_eq!((a.sample_rate, a.channels, a.codec.as_str()), (48000, 4, "mp4a.40.42"));
        let err = |p: &[u8]| audio_config(p).unwrap_err().to_string();
        assert_eq!(err(&[0x2f, 0]), "unsupported audio codec MP3: HLS is served for H.264 video and AAC audio only");
        assert!(err(&[0xbf, 0]).starts_with("unsupported audio codec Speex"));
        assert_eq!(err(&[0xaf, 0, 0x12]), "malformed AAC AudioSpecificConfig: 1 bytes end in the middle of a field");
        assert_eq!(
            err(&[0xaf, 0, 0x16, 0x90]),
            "malformed AAC AudioSpecificConfig: reserved sampling frequency index 13"
        );
        assert_eq!(
            err(&[0xaf, 1, 0x12, 0x10]),
            "malformed FLV audio sequence header: AACPacketType 1 is not a sequence header (0)"
        );
    }

    #[test]
    fn init_segments() {
        let v = video_config(&video_header()).unwrap();
        let a = audio_config(&[0xaf, 0, 0x12, 0x10]).unwrap();
        let init = init_segment(Some(&v), Some(&a));
        assert_eq!(init, init_segment(Some(&v), Some(&a)), "deterministic");
        let boxes = parse(&init, 0);
        assert_eq!(boxes.iter().map(|b| b.kind.as_str()).collect::<Vec<_>>(), ["ftyp", "moov"]);
        assert_eq!(&boxes[0].body, b"iso6\0\0\0\0iso6mp41");
        let mvhd = find(&boxes, "moov/mvhd")[0];
        assert_eq!((u32_at(&mvhd.body, 4), u32_at(&mvhd.body, 8)), (0, 0), "no clock in creation times");
        assert_eq!(u32_at(&mvhd.body, 12), TIMESCALE);
        assert_eq!(u32_at(&mvhd.body, 96), 3, "next_track_ID");
        let tkhd = find(&boxes, "moov/trak/tkhd");
        assert_eq!(tkhd.iter().map(|t| u32_at(&t.body, 12)).collect::<Vec<_>>(), [VIDEO_TRACK, AUDIO_TRACK]);
        assert_eq!((u32_at(&tkhd[0].body, 76), u32_at(&tkhd[0].body, 80)), (640 << 16, 360 << 16));
        for mdhd in find(&boxes, "moov/trak/mdia/mdhd") {
            assert_eq!((u32_at(&mdhd.body, 4), u32_at(&mdhd.body, 12)), (0, TIMESCALE));
        }
        let hdlr: Vec<_> = find(&boxes, "moov/trak/mdia/hdlr").iter().map(|h| h.body[8..12].to_vec()).collect();
        assert_eq!(hdlr, [b"vide".to_vec(), b"soun".to_vec()]);
        for t in ["stts", "stsc", "stco"] {
            let e = find(&boxes, &format!("moov/trak/mdia/minf/stbl/{t}"));
            assert_eq!(e.iter().map(|b| b.body.clone()).collect::<Vec<_>>(), [vec![0; 8], vec![0; 8]], "{t}");
        }
        let entries = find(&boxes, "moov/trak/mdia/minf/stbl/stsd");
        assert_eq!(entries.iter().map(|b| b.children[0].kind.as_str()).collect::<Vec<_>>(), ["avc1", "mp4a"]);
        // avc1: 78 bytes of fields, then avcC with the record as sent.
        let avc1 = &entries[0].children[0].body;
        assert_eq!((u16::from_be_bytes([avc1[24], avc1[25]]), u16::from_be_bytes([avc1[26], avc1[27]])), (640, 360));
        let avcc = parse(&avc1[78..], 0);
        assert_eq!((avcc[0].kind.as_str(), &avcc[0].body[..]), ("avcC", &v.avcc[..]));
        // mp4a: 28 bytes of fields, then esds (version/flags, ES_Descriptor ... DecoderSpecificInfo = the ASC).
        let mp4a = &entries[1].children[0].body;
        assert_eq!((u16::from_be_bytes([mp4a[16], mp4a[17]]), u32_at(mp4a, 24)), (2, 44100 << 16));
        let esds = parse(&mp4a[28..], 0);
        assert_eq!(esds[0].kind, "esds");
        assert_eq!(
            esds[0].body,
            [0, 0, 0, 0, 3, 25, 0, 2, 0, 4, 17, 0x40, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 2, 0x12, 0x10, 6, 1, 2]
        );
        let trex = find(&boxes, "moov/mvex/trex");
        assert_eq!(trex.iter().map(|t| (u32_at(&t.body, 4), u32_at(&t.body, 8))).collect::<Vec<_>>(), [(1, 1), (2, 1)]);

        // Audio only: the audio track keeps id 2.
        let boxes = parse(&init_segment(None, Some(&a)), 0);
        let tkhd = find(&boxes, "moov/trak/tkhd");
        assert_eq!(tkhd.iter().map(|t| u32_at(&t.body, 12)).collect::<Vec<_>>(), [AUDIO_TRACK]);
        assert_eq!(find(&boxes, "moov/mvex/trex").iter().map(|t| u32_at(&t.body, 4)).collect::<Vec<_>>(), [2]);
        let boxes = parse(&init_segment(Some(&v), None), 0);
        assert_eq!(find(&boxes, "moov/trak/tkhd").iter().map(|t| u32_at(&t.body, 12)).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn descriptor_sizes() {
        let mut b = BytesMut::new();
        descriptor(&mut b, 5, &[7; 127]);
        assert_eq!(&b[..2], &[5, 127]);
        let mut b = BytesMut::new();
        descriptor(&mut b, 5, &[7; 300]);
        assert_eq!((&b[..3], b.len()), (&[5, 0x82, 0x2c][..], 303));
    }

    #[test]
    fn samples_of_flv_payloads() {
        // Inter frame with composition time -33 (0xffffdf).
        let payload = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xdf, 0, 0, 0, 2, 0x41, 0x9a]);
        let m = Media { kind: MediaKind::Video, timestamp: 7, payload: payload.clone() };
        let s = sample_of(&m, 1000, 33).unwrap();
        assert_eq!((s.dts, s.duration, s.cts, s.keyframe), (1000, 33, -33, false));
        assert_eq!(&s.data[..], &[0, 0, 0, 2, 0x41, 0x9a]);
        assert_eq!(s.data.as_ptr(), payload[5..].as_ptr(), "shares the payload");
        let key =
            Media { kind: MediaKind::Video, timestamp: 0, payload: Bytes::from_static(&[0x17, 1, 0, 0, 0x42, 9]) };
        let s = sample_of(&key, 0, 33).unwrap();
        assert_eq!((s.cts, s.keyframe, &s.data[..]), (0x42, true, &[9u8][..]));
        let aac = Media { kind: MediaKind::Audio, timestamp: 0, payload: Bytes::from_static(&[0xaf, 1, 0x21, 0x10]) };
        let s = sample_of(&aac, 5, 23).unwrap();
        assert_eq!((s.dts, s.duration, s.cts, s.keyframe, &s.data[..]), (5, 23, 0, true, &[0x21u8, 0x10][..]));
        // Sequence headers, other codecs, command frames, end of sequence, metadata and short payloads: none.
        for (kind, p) in [
            (MediaKind::Video, &video_header()[..]),
            (MediaKind::Video, &[0x27, 1, 0, 0, 0][..]),
            (MediaKind::Video, &[0x17, 2, 0, 0, 0][..]),
            (MediaKind::Video, &[0x57, 1, 0, 0, 0, 1][..]),
            (MediaKind::Video, &[0x1c, 1, 0, 0, 0, 1][..]),
            (MediaKind::Audio, &[0xaf, 0, 0x12, 0x10][..]),
            (MediaKind::Audio, &[0x2f, 1, 0xff, 0xfb][..]),
            (MediaKind::Audio, &[0xaf, 1][..]),
            (MediaKind::Data, &[0xaf, 1, 2, 3][..]),
        ] {
            let m = Media { kind, timestamp: 0, payload: Bytes::copy_from_slice(p) };
            assert!(sample_of(&m, 0, 0).is_none(), "{kind:?} {p:?}");
        }
    }

    /// Sequence headers come from publishers: any bytes give a config or an error, never a panic.
    #[test]
    fn headers_from_any_bytes() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let video = video_header();
        let audio = [0xaf, 0, 0x12, 0x10];
        let (mut ok_v, mut ok_a) = (0, 0);
        for _ in 0..20_000 {
            let mut v = video.clone();
            let mut a = audio.to_vec();
            for _ in 0..1 + rand() % 3 {
                let i = rand() as usize % v.len();
                v[i] = rand() as u8;
                let i = rand() as usize % a.len();
                a[i] = rand() as u8;
            }
            v.truncate(rand() as usize % (v.len() + 1));
            a.extend((0..rand() % 8).map(|_| rand() as u8));
            ok_v += video_config(&v).is_ok() as u32;
            ok_a += audio_config(&a).is_ok() as u32;
            // Keep the FLV bytes right so the avcC and ASC parsers see the damage.
            v.splice(..v.len().min(5), [0x17, 0, 0, 0, 0]);
            a.splice(..2, [0xaf, 0]);
            let _ = video_config(&v);
            let _ = audio_config(&a);
        }
        // Some mutations leave a usable header (the checks are not refusing everything).
        assert!(ok_v > 0 && ok_a > 0, "{ok_v} {ok_a}");
    }

    fn sample(dts: u64, duration: u32, cts: i32, keyframe: bool, data: &[u8]) -> Sample {
        Sample { dts, duration, cts, keyframe, data: Bytes::copy_from_slice(data) }
    }

    #[test]
    fn fragments() {
        let video =
            [sample(1_000_000_000_000, 33, 66, true, &[1; 10]), sample(1_000_000_000_033, 33, -33, false, &[2; 7])];
        let audio = [sample(999_999_999_990, 23, 0, true, &[3; 5]), sample(999_999_999_013, 24, 0, true, &[4; 6])];
        let parts = fragment(42, &video, &audio);
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[1].as_ptr(), video[0].data.as_ptr(), "the media is not copied");
        let all: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        assert_eq!(all, fragment(42, &video, &audio).concat(), "deterministic");
        let boxes = parse(&all, 0);
        assert_eq!(boxes.iter().map(|b| b.kind.as_str()).collect::<Vec<_>>(), ["moof", "mdat"]);
        assert_eq!(boxes[1].body.len(), 28);
        assert_eq!(boxes[1].at + 8, parts[0].len(), "the header ends with the mdat header");
        assert_eq!(u32_at(&find(&boxes, "moof/mfhd")[0].body, 4), 42);
        let tfhd = find(&boxes, "moof/traf/tfhd");
        assert_eq!(
            tfhd.iter().map(|t| (u32_at(&t.body, 0), u32_at(&t.body, 4))).collect::<Vec<_>>(),
            [(0x02_0000, 1), (0x02_0000, 2)]
        );
        let tfdt = find(&boxes, "moof/traf/tfdt");
        assert_eq!(tfdt[0].body[0], 1, "version 1");
        let base = |b: &Bx| u64::from_be_bytes(b.body[4..12].try_into().unwrap());
        assert_eq!((base(tfdt[0]), base(tfdt[1])), (1_000_000_000_000, 999_999_999_990));
        let trun = find(&boxes, "moof/traf/trun");
        for (t, samples) in trun.iter().zip([&video[..], &audio[..]]) {
            assert_eq!(u32_at(&t.body, 0), 0x0100_0F01, "version 1, offset/duration/size/flags/cts");
            assert_eq!(u32_at(&t.body, 4) as usize, samples.len());
            // The data offset counts from the moof's first byte; the samples follow one another.
            let mut at = u32_at(&t.body, 8) as usize;
            for (i, s) in samples.iter().enumerate() {
                let row = &t.body[12 + 16 * i..28 + 16 * i];
                assert_eq!(u32_at(row, 0), s.duration);
                assert_eq!(u32_at(row, 4) as usize, s.data.len());
                assert_eq!(u32_at(row, 8), if s.keyframe { 0x0200_0000 } else { 0x0101_0000 });
                assert_eq!(u32_at(row, 12) as i32, s.cts);
                assert_eq!(&all[at..at + s.data.len()], &s.data[..]);
                at += s.data.len();
            }
        }
        // Video only: one traf, data right after the mdat header.
        let all = fragment(1, &video, &[]).concat();
        let boxes = parse(&all, 0);
        let trun = find(&boxes, "moof/traf/trun");
        assert_eq!(trun.len(), 1);
        assert_eq!(u32_at(&trun[0].body, 8) as usize, boxes[1].at + 8);
        assert_eq!(boxes[1].body, [[1; 10], [2; 10]].concat()[..17]);
        // Audio only: the traf says track 2.
        let all = fragment(2, &[], &audio).concat();
        let boxes = parse(&all, 0);
        assert_eq!(u32_at(&find(&boxes, "moof/traf/tfhd")[0].body, 4), AUDIO_TRACK);
    }
}
