//! RTSP sources (IP cameras) through retina: one session over TCP (interleaved), H.264 video and AAC audio turned
//! into the FLV-style messages the hub carries, with decoder configuration sent first and again on change.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures::StreamExt;
use retina::client::{Credentials, PlayOptions, SessionOptions, SetupOptions, Transport};
use retina::codec::{CodecItem, ParametersRef};

use super::Ingest;
use crate::hub::{Publisher, SourceInfo, Stream};
use crate::ingest::edge::PullEnd;
use crate::wire::proto::{Media, MediaKind};

/// An `rtsp://[USER:PASS@]HOST[:PORT]/PATH` source.
pub use api_types::relay::RtspUrl;

/// The AVC sequence header message: the decoder configuration a player needs before any frame.
pub fn video_header(avc_config: &[u8], ts: u32) -> Media {
    let mut p = BytesMut::with_capacity(5 + avc_config.len());
    p.put_slice(&[0x17, 0x00, 0, 0, 0]);
    p.put_slice(avc_config);
    Media { kind: MediaKind::Video, timestamp: ts, payload: p.freeze() }
}

/// One H.264 access unit (NALs with 4-byte lengths, as retina gives them and FLV wants them).
pub fn video_frame(data: &[u8], keyframe: bool, ts: u32) -> Media {
    let mut p = BytesMut::with_capacity(5 + data.len());
    p.put_slice(&[if keyframe { 0x17 } else { 0x27 }, 0x01, 0, 0, 0]);
    p.put_slice(data);
    Media { kind: MediaKind::Video, timestamp: ts, payload: p.freeze() }
}

/// The AAC sequence header (AudioSpecificConfig). FLV's first byte says AAC; its rate and size bits are fixed by
/// the format (the real ones are in the config).
pub fn audio_header(asc: &[u8], ts: u32) -> Media {
    let mut p = BytesMut::with_capacity(2 + asc.len());
    p.put_slice(&[0xAF, 0x00]);
    p.put_slice(asc);
    Media { kind: MediaKind::Audio, timestamp: ts, payload: p.freeze() }
}

pub fn audio_frame(data: &[u8], ts: u32) -> Media {
    let mut p = BytesMut::with_capacity(2 + data.len());
    p.put_slice(&[0xAF, 0x01]);
    p.put_slice(data);
    Media { kind: MediaKind::Audio, timestamp: ts, payload: p.freeze() }
}

/// Milliseconds since the stream's first RTP timestamp.
fn ms(elapsed: i64, clock: NonZeroU32) -> u32 {
    (elapsed.max(0) as u128 * 1000 / clock.get() as u128) as u32
}

/// One RTSP session: DESCRIBE, SETUP of the H.264 and AAC streams, PLAY, then frames into `stream` until the
/// camera fails, sends nothing for --source-timeout, or the source is removed.
pub(crate) async fn pull_once(
    ctx: &Arc<Ingest>,
    stream: &Arc<Stream>,
    src: &RtspUrl,
    shown: &str,
    removed: &AtomicBool,
    role: &str,
    playing: &mut bool,
) -> Result<PullEnd, String> {
    let limit = ctx.config.handshake_timeout;
    let opts = SessionOptions::default()
        .creds(src.creds.as_ref().map(|(u, p)| Credentials { username: u.clone(), password: p.clone() }))
        .user_agent("relay".into());
    let mut session = tokio::time::timeout(limit, retina::client::Session::describe(src.url.clone(), opts))
        .await
        .map_err(|_| "DESCRIBE timed out".to_string())?
        .map_err(|e| format!("DESCRIBE: {e}"))?;
    let find = |media: &str, enc: &str| {
        session.streams().iter().position(|s| s.media() == media && s.encoding_name().eq_ignore_ascii_case(enc))
    };
    let video = find("video", "h264");
    let audio = find("audio", "mpeg4-generic");
    // A camera whose picture we cannot carry (H.265, MJPEG) is an error to show, not an audio-only stream.
    let other_video = video.is_none() && session.streams().iter().any(|s| s.media() == "video");
    if other_video || (video.is_none() && audio.is_none()) {
        let offered: Vec<String> =
            session.streams().iter().map(|s| format!("{}/{}", s.media(), s.encoding_name())).collect();
        return Err(format!("unsupported codec: the camera offers {} (H.264 and AAC are taken)", offered.join(", ")));
    }
    for i in [video, audio].into_iter().flatten() {
        // MP4 framing: length-prefixed NALUs with the AVCDecoderConfigurationRecord as extra data, raw AAC with the
        // AudioSpecificConfig: what FLV carries. Named, not left to retina's default.
        let setup = SetupOptions::default()
            .transport(Transport::Tcp(Default::default()))
            .frame_format(retina::codec::FrameFormat::MP4);
        tokio::time::timeout(limit, session.setup(i, setup))
            .await
            .map_err(|_| "SETUP timed out".to_string())?
            .map_err(|e| format!("SETUP: {e}"))?;
    }
    // Cheap cameras often send no RTP-Info; retina's default then refuses to play two streams. Permissive uses it
    // when every stream has it (tracks start in sync) and starts each track at 0 otherwise.
    let play_options = PlayOptions::default().initial_timestamp(retina::client::InitialTimestampPolicy::Permissive);
    let playing_session = tokio::time::timeout(limit, session.play(play_options))
        .await
        .map_err(|_| "PLAY timed out".to_string())?
        .map_err(|e| format!("PLAY: {e}"))?;
    let mut demuxed = playing_session.demuxed().map_err(|e| format!("demuxing: {e}"))?;
    let publisher =
        Publisher::attach_as(stream.clone(), SourceInfo { kind: "pull-rtsp", peer: shown.to_string() }, role)
            .map_err(|e| format!("cannot attach: {e}"))?;
    *playing = true;
    let (mut video_sent, mut audio_sent) = (false, false);
    // Players and FLV muxers expect each track's timestamps never to go back (a camera's B-frames or clock step).
    let (mut video_ms, mut audio_ms) = (0u32, 0u32);
    let mut stop = ctx.stopping.clone();
    let mut last_input = tokio::time::Instant::now();
    let result = loop {
        let item = tokio::select! {
            i = demuxed.next() => Ok(i),
            _ = tokio::time::sleep_until(last_input + ctx.config.source_timeout) => Err(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                if removed.load(Ordering::Acquire) {
                    break Ok(PullEnd::Ended);
                }
                continue;
            }
            _ = stop.wait() => break Ok(PullEnd::Ended),
        };
        let item = match item {
            Err(_) => break Err("the camera sent nothing within --source-timeout".to_string()),
            Ok(None) => break Err("the camera ended the session".to_string()),
            Ok(Some(Err(e))) => break Err(format!("RTSP: {e}")),
            Ok(Some(Ok(i))) => i,
        };
        last_input = tokio::time::Instant::now();
        match item {
            CodecItem::VideoFrame(f) => {
                let ts = ms(f.timestamp().elapsed(), f.timestamp().clock_rate()).max(video_ms);
                video_ms = ts;
                if !video_sent || f.has_new_parameters() {
                    if let Some(ParametersRef::Video(p)) = demuxed.streams()[f.stream_id()].parameters() {
                        publisher.push(video_header(p.extra_data(), ts));
                        video_sent = true;
                    }
                }
                if video_sent {
                    publisher.push(video_frame(f.data(), f.is_random_access_point(), ts));
                }
            }
            CodecItem::AudioFrame(f) => {
                let ts = ms(f.timestamp().elapsed(), f.timestamp().clock_rate()).max(audio_ms);
                audio_ms = ts;
                if !audio_sent {
                    if let Some(ParametersRef::Audio(p)) = demuxed.streams()[f.stream_id()].parameters() {
                        publisher.push(audio_header(p.extra_data(), ts));
                        audio_sent = true;
                    }
                }
                if audio_sent {
                    publisher.push(audio_frame(f.data(), ts));
                }
            }
            _ => {}
        }
        if removed.load(Ordering::Acquire) {
            break Ok(PullEnd::Ended);
        }
    };
    drop(publisher);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flv_messages() {
        let h = video_header(&[1, 0x64, 0, 0x1f, 0xff], 0);
        assert!(h.is_video_header() && h.is_keyframe());
        assert_eq!(&h.payload[..], &[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f, 0xff]);
        let k = video_frame(&[0, 0, 0, 1, 0x65], true, 40);
        assert!(k.is_keyframe() && !k.is_video_header());
        assert_eq!(&k.payload[..5], &[0x17, 1, 0, 0, 0]);
        assert!(!video_frame(&[0, 0, 0, 1, 0x41], false, 80).is_keyframe());
        let a = audio_header(&[0x12, 0x10], 0);
        assert!(a.is_audio_header());
        assert_eq!(&audio_frame(&[1, 2], 23).payload[..], &[0xAF, 1, 1, 2]);
        assert_eq!(ms(90_000, NonZeroU32::new(90_000).unwrap()), 1000);
        assert_eq!(ms(-5, NonZeroU32::new(48_000).unwrap()), 0);
    }
}
