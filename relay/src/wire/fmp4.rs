//! PLACEHOLDER until the fmp4 branch lands: the muxer's API with trivial bodies (replaced by the real muxer).

use bytes::Bytes;

use super::proto::{Media, MediaKind};

pub const VIDEO_TRACK: u32 = 1;
pub const AUDIO_TRACK: u32 = 2;
pub const TIMESCALE: u32 = 1000;

#[derive(Debug, Clone, PartialEq)]
pub struct VideoConfig {
    pub avcc: Bytes,
    pub width: u16,
    pub height: u16,
    pub codec: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AudioConfig {
    pub asc: Bytes,
    pub sample_rate: u32,
    pub channels: u16,
    pub codec: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Fmp4Error {
    #[error("unsupported codec: {0}")]
    Unsupported(String),
}

pub fn video_config(p: &[u8]) -> Result<VideoConfig, Fmp4Error> {
    if p.len() < 5 || p[0] & 0x0f != 7 {
        return Err(Fmp4Error::Unsupported("video".into()));
    }
    Ok(VideoConfig { avcc: Bytes::copy_from_slice(&p[5..]), width: 0, height: 0, codec: "avc1.640028".into() })
}

pub fn audio_config(p: &[u8]) -> Result<AudioConfig, Fmp4Error> {
    if p.len() < 2 || p[0] >> 4 != 10 {
        return Err(Fmp4Error::Unsupported("audio".into()));
    }
    Ok(AudioConfig { asc: Bytes::copy_from_slice(&p[2..]), sample_rate: 44100, channels: 2, codec: "mp4a.40.2".into() })
}

pub fn init_segment(video: Option<&VideoConfig>, audio: Option<&AudioConfig>) -> Bytes {
    let mut v = b"INIT".to_vec();
    if let Some(x) = video {
        v.extend_from_slice(&x.avcc);
    }
    if let Some(x) = audio {
        v.extend_from_slice(&x.asc);
    }
    Bytes::from(v)
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub dts: u64,
    pub duration: u32,
    pub cts: i32,
    pub keyframe: bool,
    pub data: Bytes,
}

pub fn sample_of(media: &Media, dts: u64, duration: u32) -> Option<Sample> {
    match media.kind {
        MediaKind::Video if media.payload.len() > 5 && media.payload[1] == 1 => Some(Sample {
            dts,
            duration,
            cts: 0,
            keyframe: media.is_keyframe(),
            data: media.payload.slice(5..),
        }),
        MediaKind::Audio if media.payload.len() > 2 && media.payload[1] == 1 => {
            Some(Sample { dts, duration, cts: 0, keyframe: true, data: media.payload.slice(2..) })
        }
        _ => None,
    }
}

pub fn fragment(sequence: u32, video: &[Sample], audio: &[Sample]) -> Vec<Bytes> {
    let mut out = vec![Bytes::from(format!("MOOF{sequence}:{}:{}", video.len(), audio.len()))];
    out.extend(video.iter().chain(audio).map(|s| s.data.clone()));
    out
}
