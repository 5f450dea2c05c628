//! RTSP sources (IP cameras) through retina: one session over TCP, H.264 and AAC turned into the FLV-style
//! messages a publisher sends, so the hub, the GOP cache and every player protocol take them unchanged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use retina::client::{
    Credentials, InitialTimestampPolicy, PlayOptions, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio::time::{timeout, Instant};
use tracing::{info, warn};

use crate::hub::{SourceInfo, Stream};
use crate::proto::{Media, MediaKind};
use crate::Ctx;

/// An `rtsp://[USER[:PASS]@]HOST[:PORT]/PATH` source, its credentials kept apart from the URL retina gets, so
/// they are only ever sent in the RTSP authentication exchange (never logged, never shown by the API).
#[derive(Clone, PartialEq, Eq)]
pub struct RtspUrl {
    /// The URL without user info.
    url: url::Url,
    /// (user, password), percent-decoded.
    creds: Option<(String, String)>,
}

impl std::fmt::Debug for RtspUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Debug output ends up in logs and panics: the password must not.
        f.debug_struct("RtspUrl").field("url", &self.shown()).field("creds", &self.creds.is_some()).finish()
    }
}

impl RtspUrl {
    /// Parses an `rtsp://` URL; the reason on failure is for [`crate::source::SourceError::BadUrl`].
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let mut url = url::Url::parse(raw).map_err(|e| match e {
            url::ParseError::InvalidPort => "bad port",
            url::ParseError::EmptyHost => "missing host",
            _ => "not a URL",
        })?;
        if url.scheme() != "rtsp" {
            return Err("only rtmp:// and rtsp:// sources are supported");
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("missing host");
        }
        if url.fragment().is_some() {
            return Err("a #fragment has no meaning in RTSP");
        }
        let creds = match (url.username(), url.password()) {
            ("", None) => None,
            (user, pass) => Some((percent_decode(user)?, percent_decode(pass.unwrap_or(""))?)),
        };
        // Cannot fail: an rtsp:// URL with a host can carry user info, so it can also drop it.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(Self { url, creds })
    }

    /// `rtsp://HOST[:PORT]/PATH`: no credentials and no query (cameras take tokens there too).
    pub fn shown(&self) -> String {
        let port = self.url.port().map(|p| format!(":{p}")).unwrap_or_default();
        format!("rtsp://{}{port}{}", self.url.host_str().unwrap_or(""), self.url.path())
    }
}

fn percent_decode(s: &str) -> Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
            let v = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("bad %-escape in the user info")?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "user info is not UTF-8")
}

/// Why an RTSP session ended badly; shown as the source's error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RtspError {
    #[error("RTSP: {0}")]
    Rtsp(#[from] retina::Error),
    #[error("{0}")]
    Timeout(&'static str),
    #[error("unsupported codec {0}: only H.264 video and AAC audio are ingested")]
    Unsupported(String),
    #[error("the camera ended the session")]
    Closed,
    #[error("stream already has a source: {0}")]
    Busy(String),
}

/// FLV video tag body of an AVC sequence header: keyframe + AVC, packet type 0, composition time 0, then the
/// AVCDecoderConfigurationRecord.
pub(crate) fn avc_sequence_header(record: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + record.len());
    b.put_slice(&[0x17, 0x00, 0, 0, 0]);
    b.put_slice(record);
    b.freeze()
}

/// FLV video tag body of one picture: frame type (1 key, 2 inter) + AVC, packet type 1 (NALUs), composition time
/// 0 (RTP carries presentation times only, and cameras send no B-frames), then length-prefixed NAL units.
pub(crate) fn avc_frame(nalus: &[u8], keyframe: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + nalus.len());
    b.put_slice(&[if keyframe { 0x17 } else { 0x27 }, 0x01, 0, 0, 0]);
    b.put_slice(nalus);
    b.freeze()
}

/// FLV audio tag body of an AAC sequence header (the AudioSpecificConfig). 0xAF is what FLV requires for AAC
/// whatever the real rate and channels: the decoder reads those from the AudioSpecificConfig.
pub(crate) fn aac_sequence_header(config: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + config.len());
    b.put_slice(&[0xAF, 0x00]);
    b.put_slice(config);
    b.freeze()
}

/// FLV audio tag body of one raw AAC access unit.
pub(crate) fn aac_frame(data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(2 + data.len());
    b.put_slice(&[0xAF, 0x01]);
    b.put_slice(data);
    b.freeze()
}

/// Turns one RTSP session's frames into hub messages: the decoder configuration before the first frame that
/// needs it and again when it changes, timestamps in ms from the session start that never go backwards.
#[derive(Default)]
pub(crate) struct FlvMux {
    video_config: Option<Vec<u8>>,
    audio_config: Option<Vec<u8>>,
    /// A player can decode nothing before the first keyframe, so earlier pictures are dropped.
    keyframe_seen: bool,
    last_video_ms: u32,
    last_audio_ms: u32,
}

impl FlvMux {
    /// Messages for one picture. `config` is the stream's AVCDecoderConfigurationRecord now.
    pub fn video(&mut self, config: Option<&[u8]>, nalus: &[u8], keyframe: bool, ms: u32, out: &mut Vec<Media>) {
        let ms = ms.max(self.last_video_ms);
        self.last_video_ms = ms;
        if let Some(c) = config {
            if self.video_config.as_deref() != Some(c) {
                self.video_config = Some(c.to_vec());
                out.push(Media { kind: MediaKind::Video, timestamp: ms, payload: avc_sequence_header(c) });
            }
        }
        if self.video_config.is_none() || !(keyframe || self.keyframe_seen) {
            return;
        }
        self.keyframe_seen = true;
        out.push(Media { kind: MediaKind::Video, timestamp: ms, payload: avc_frame(nalus, keyframe) });
    }

    /// Messages for one AAC access unit. `config` is the stream's AudioSpecificConfig.
    pub fn audio(&mut self, config: Option<&[u8]>, data: &[u8], ms: u32, out: &mut Vec<Media>) {
        let ms = ms.max(self.last_audio_ms);
        self.last_audio_ms = ms;
        if let Some(c) = config {
            if self.audio_config.as_deref() != Some(c) {
                self.audio_config = Some(c.to_vec());
                out.push(Media { kind: MediaKind::Audio, timestamp: ms, payload: aac_sequence_header(c) });
            }
        }
        if self.audio_config.is_some() {
            out.push(Media { kind: MediaKind::Audio, timestamp: ms, payload: aac_frame(data) });
        }
    }
}

/// Milliseconds since the stream's start (RTP-Info, or its first packet); before the start counts as 0.
fn millis(ts: retina::Timestamp) -> u32 {
    let ms = i128::from(ts.elapsed()) * 1000 / i128::from(ts.clock_rate().get());
    ms.clamp(0, i128::from(u32::MAX)) as u32
}

/// One RTSP session: DESCRIBE, SETUP (TCP interleaved), PLAY, then feed `stream` until the source is removed, the
/// relay stops (Ok) or the session fails (Err). `attached` is set once this session feeds the stream.
pub(crate) async fn ingest_once(
    ctx: &Arc<Ctx>,
    stream: &Arc<Stream>,
    src: &RtspUrl,
    removed: &AtomicBool,
    attached: &mut bool,
) -> Result<(), RtspError> {
    let creds = src
        .creds
        .as_ref()
        .map(|(username, password)| Credentials { username: username.clone(), password: password.clone() });
    let options = SessionOptions::default().creds(creds).user_agent(format!("relay/{}", env!("CARGO_PKG_VERSION")));
    let start = async {
        let mut session = retina::client::Session::describe(src.url.clone(), options).await?;
        let streams = session.streams();
        let pick = |media: &str, codec: &str| -> Result<Option<usize>, RtspError> {
            match streams.iter().position(|s| s.media() == media) {
                Some(i) if streams[i].encoding_name() == codec => Ok(Some(i)),
                Some(i) => Err(RtspError::Unsupported(format!("{media} {}", streams[i].encoding_name()))),
                None => Ok(None),
            }
        };
        let video = pick("video", "h264")?;
        let audio = match pick("audio", "mpeg4-generic") {
            // Many cameras send G.711 beside H.264: the picture is what matters, so go on without the sound.
            Err(e) if video.is_some() => {
                warn!(url = %src.shown(), error = %e, "ingesting the video only");
                None
            }
            r => r?,
        };
        if video.is_none() && audio.is_none() {
            return Err(RtspError::Unsupported("(none: no video or audio stream)".into()));
        }
        for i in video.iter().chain(audio.iter()) {
            // MP4 framing: length-prefixed NAL units with the AVCDecoderConfigurationRecord as extra data, raw
            // AAC with the AudioSpecificConfig as extra data; exactly what FLV carries.
            let setup = SetupOptions::default()
                .transport(Transport::Tcp(TcpTransportOptions::default()))
                .frame_format(FrameFormat::MP4);
            session.setup(*i, setup).await?;
        }
        // Cameras differ in whether they send RTP-Info; with it the tracks start in sync, without it each starts at 0.
        let play = PlayOptions::default().initial_timestamp(InitialTimestampPolicy::Permissive);
        let playing = session.play(play).await?.demuxed()?;
        Ok::<_, RtspError>((playing, video, audio))
    };
    let (mut session, video, audio) = timeout(ctx.config.handshake_timeout, start)
        .await
        .map_err(|_| RtspError::Timeout("RTSP DESCRIBE/SETUP/PLAY timed out (--handshake-timeout)"))??;
    let id = stream
        .attach_source(SourceInfo { kind: "pull-rtsp", peer: src.shown() })
        .map_err(|busy| RtspError::Busy(busy.0))?;
    *attached = true;
    info!(url = %src.shown(), app = %stream.app, key = %stream.name, video = video.is_some(), audio = audio.is_some(), "RTSP source playing");
    let mut mux = FlvMux::default();
    let mut out = Vec::new();
    let mut stop = ctx.stopping.clone();
    let mut check = tokio::time::interval(Duration::from_millis(500));
    let mut last_input = Instant::now();
    let result = loop {
        for m in out.drain(..) {
            stream.push(id, m);
        }
        let held = stream.held_until().map(Instant::from_std);
        tokio::select! {
            item = session.next() => {
                let item = match item {
                    None => break Err(RtspError::Closed),
                    Some(Err(e)) => break Err(e.into()),
                    Some(Ok(item)) => item,
                };
                match item {
                    CodecItem::VideoFrame(f) if Some(f.stream_id()) == video => {
                        last_input = Instant::now();
                        // The record is read only when it may have changed (and for the first picture).
                        let params = if f.has_new_parameters() || mux.video_config.is_none() {
                            match session.streams()[f.stream_id()].parameters() {
                                Some(ParametersRef::Video(p)) => Some(p.extra_data().to_vec()),
                                _ => None,
                            }
                        } else {
                            None
                        };
                        let key = f.is_random_access_point();
                        mux.video(params.as_deref(), f.data(), key, millis(f.timestamp()), &mut out);
                    }
                    CodecItem::AudioFrame(f) if Some(f.stream_id()) == audio => {
                        last_input = Instant::now();
                        let params = if mux.audio_config.is_none() {
                            match session.streams()[f.stream_id()].parameters() {
                                Some(ParametersRef::Audio(p)) => Some(p.extra_data().to_vec()),
                                _ => None,
                            }
                        } else {
                            None
                        };
                        mux.audio(params.as_deref(), f.data(), millis(f.timestamp()), &mut out);
                    }
                    // RTCP reports and other tracks keep the session alive but carry nothing for players.
                    _ => last_input = Instant::now(),
                }
            }
            _ = tokio::time::sleep_until(held.unwrap_or_else(Instant::now)), if held.is_some() => {
                stream.release_due();
            }
            _ = check.tick() => {
                if stream.is_ended() || removed.load(Ordering::Acquire) {
                    break Ok(());
                }
                if last_input.elapsed() >= ctx.config.source_timeout {
                    break Err(RtspError::Timeout("the camera sent nothing within --source-timeout"));
                }
            }
            _ = stop.wait() => break Ok(()),
        }
    };
    stream.detach_source(id);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtsp_urls_keep_credentials_apart() {
        let u = RtspUrl::parse("rtsp://admin:p%40ss:w@10.0.0.7:8554/Streaming/Channels/101?token=x").unwrap();
        assert_eq!(u.creds, Some(("admin".into(), "p@ss:w".into())));
        assert_eq!(u.url.as_str(), "rtsp://10.0.0.7:8554/Streaming/Channels/101?token=x", "retina gets no user info");
        assert_eq!(u.shown(), "rtsp://10.0.0.7:8554/Streaming/Channels/101");
        assert!(!format!("{u:?}").contains("p@ss") && !format!("{u:?}").contains("p%40ss"), "{u:?}");
        let u = RtspUrl::parse("rtsp://cam.local/live").unwrap();
        assert_eq!((u.creds.clone(), u.shown().as_str()), (None, "rtsp://cam.local/live"));
        assert_eq!(RtspUrl::parse("rtsp://user@[::1]/x").unwrap().creds, Some(("user".into(), String::new())));
        for (bad, why) in [
            ("rtsp://", "missing host"),
            ("rtsp://x:99999/a", "bad port"),
            ("rtsp://u:%zz@x/a", "%-escape"),
            ("rtsp://x/a#b", "fragment"),
            ("rtsps://x/a", "only rtmp:// and rtsp://"),
        ] {
            let e = RtspUrl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn sequence_headers_and_frames_are_flv_tag_bodies() {
        let record = [1, 0x64, 0, 0x1e, 0xff, 0xe1, 0, 2, 0x67, 0x64, 1, 0, 2, 0x68, 0xee];
        let h = avc_sequence_header(&record);
        assert_eq!(&h[..5], &[0x17, 0, 0, 0, 0]);
        assert_eq!(&h[5..], &record);
        let m = Media { kind: MediaKind::Video, timestamp: 0, payload: h };
        assert!(m.is_video_header() && m.is_keyframe());
        assert_eq!(&avc_frame(&[0, 0, 0, 1, 0x65], true)[..], &[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
        assert_eq!(&avc_frame(&[0, 0, 0, 1, 0x41], false)[..2], &[0x27, 1]);
        // AAC-LC, 48 kHz, stereo.
        let asc = [0x11, 0x90];
        assert_eq!(&aac_sequence_header(&asc)[..], &[0xAF, 0, 0x11, 0x90]);
        let m = Media { kind: MediaKind::Audio, timestamp: 0, payload: aac_sequence_header(&asc) };
        assert!(m.is_audio_header());
        assert_eq!(&aac_frame(&[0x21, 0x10])[..], &[0xAF, 1, 0x21, 0x10]);
    }

    #[test]
    fn the_mux_sends_configuration_first_and_on_change_and_never_goes_back_in_time() {
        let mut mux = FlvMux::default();
        let mut out = Vec::new();
        // No configuration yet, then an inter picture before any keyframe: nothing a player could decode.
        mux.video(None, &[0, 0, 0, 1, 0x65], true, 0, &mut out);
        mux.video(Some(&[1, 0x64]), &[0, 0, 0, 1, 0x41], false, 33, &mut out);
        assert_eq!(out.len(), 1, "only the sequence header");
        assert!(out[0].is_video_header());
        out.clear();
        mux.video(Some(&[1, 0x64]), &[0, 0, 0, 1, 0x65], true, 66, &mut out);
        mux.video(None, &[0, 0, 0, 1, 0x41], false, 50, &mut out);
        assert_eq!(out.iter().map(|m| (m.is_keyframe(), m.timestamp)).collect::<Vec<_>>(), [(true, 66), (false, 66)]);
        out.clear();
        mux.video(Some(&[1, 0x64]), &[0, 0, 0, 1, 0x65], true, 100, &mut out);
        assert_eq!(out.len(), 1, "the same configuration is not sent again");
        out.clear();
        mux.video(Some(&[1, 0x4d]), &[0, 0, 0, 1, 0x65], true, 133, &mut out);
        assert!(out[0].is_video_header() && out[0].payload[5..] == [1, 0x4d] && out[1].is_keyframe());
        out.clear();
        mux.audio(Some(&[0x11, 0x90]), &[0x21], 10, &mut out);
        mux.audio(None, &[0x21], 31, &mut out);
        assert!(out[0].is_audio_header());
        assert_eq!(out.iter().map(|m| m.timestamp).collect::<Vec<_>>(), [10, 10, 31]);
        assert_eq!(&out[2].payload[..], &[0xAF, 1, 0x21]);
    }

    #[test]
    fn milliseconds_from_rtp_timestamps() {
        let ts = |t: i64, rate: u32, start: u32| retina::Timestamp::new(t, rate.try_into().unwrap(), start).unwrap();
        assert_eq!(millis(ts(90_000 + 3000, 90_000, 90_000)), 33);
        assert_eq!(millis(ts(48_000 * 2, 48_000, 0)), 2000);
        assert_eq!(millis(ts(5, 90_000, 900)), 0, "before the start");
    }
}
