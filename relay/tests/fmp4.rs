//! The fMP4 muxer (`relay::wire::fmp4`) against real tools: an FLV from ffmpeg (H.264 with B-frames + AAC) becomes
//! an init segment and ~1 s fragments that ffprobe counts frame by frame and ffmpeg decodes without an error.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{run_limited, TempDir};
use relay::wire::fmp4::{self, Sample};
use relay::wire::proto::{Media, MediaKind};

/// The tags of an FLV file as the relay's `Media` (the payload shares the file's buffer).
fn flv_tags(file: &Bytes) -> Vec<Media> {
    assert_eq!(&file[..3], b"FLV", "not an FLV file");
    let mut pos = u32::from_be_bytes(file[5..9].try_into().unwrap()) as usize + 4; // header, PreviousTagSize0
    let mut tags = vec![];
    while pos + 11 <= file.len() {
        let h = &file[pos..pos + 11];
        let size = u32::from_be_bytes([0, h[1], h[2], h[3]]) as usize;
        // 24 low bits of the timestamp, then the high 8.
        let timestamp = u32::from_be_bytes([h[7], h[4], h[5], h[6]]);
        let body = pos + 11;
        assert!(body + size + 4 <= file.len(), "tag at {pos} of {size} bytes overruns the file");
        let kind = match h[0] & 0x1F {
            8 => Some(MediaKind::Audio),
            9 => Some(MediaKind::Video),
            _ => None,
        };
        if let Some(kind) = kind {
            tags.push(Media { kind, timestamp, payload: file.slice(body..body + size) });
        }
        let prev = u32::from_be_bytes(file[body + size..body + size + 4].try_into().unwrap()) as usize;
        assert_eq!(prev, 11 + size, "PreviousTagSize at {}", body + size);
        pos = body + size + 4;
    }
    assert_eq!(pos, file.len(), "trailing bytes after the last tag");
    tags
}

/// One track's samples, each lasting until the next one's dts (the last: the delta before it).
fn samples(tags: &[&Media]) -> Vec<Sample> {
    let dts: Vec<u64> = tags.iter().map(|m| m.timestamp as u64).collect();
    let mut out = vec![];
    for (i, m) in tags.iter().enumerate() {
        let duration = match (dts.get(i + 1), i.checked_sub(1)) {
            (Some(next), _) => next - dts[i],
            (None, Some(prev)) => dts[i] - dts[prev],
            (None, None) => 0,
        };
        out.push(fmp4::sample_of(m, dts[i], duration as u32).expect("an H.264/AAC frame"));
    }
    out
}

/// Init segment + fragments of about 1 s (each starting at a video keyframe) for the FLV's tags, in one buffer, with
/// the video and/or the audio track; also the number of fragments and the configs' codec strings.
fn mux(tags: &[Media], with_video: bool, with_audio: bool) -> (Vec<u8>, usize, String, String) {
    let vh = tags.iter().find(|m| m.is_video_header()).expect("an AVC sequence header");
    let ah = tags.iter().find(|m| m.is_audio_header()).expect("an AAC sequence header");
    let video = fmp4::video_config(&vh.payload).unwrap();
    let audio = fmp4::audio_config(&ah.payload).unwrap();
    assert_eq!((video.width, video.height), (640, 360));
    assert_eq!((audio.sample_rate, audio.channels), (44100, 1));
    let frames = |kind| -> Vec<&Media> {
        // Neither the sequence headers nor the AVC end of sequence (AVCPacketType 2) ffmpeg writes last.
        let frame = |m: &&Media| {
            !m.is_video_header() && !m.is_audio_header() && (m.kind != MediaKind::Video || m.payload[1] != 2)
        };
        tags.iter().filter(|m| m.kind == kind).filter(frame).collect()
    };
    let (v, a) = (samples(&frames(MediaKind::Video)), samples(&frames(MediaKind::Audio)));
    assert!(v[0].keyframe, "the video starts with a keyframe");
    // Cut at the first keyframe at least 1 s after the fragment's start.
    let mut cuts = vec![v[0].dts];
    for s in &v {
        if s.keyframe && s.dts >= cuts.last().unwrap() + 1000 {
            cuts.push(s.dts);
        }
    }
    let mut out = fmp4::init_segment(with_video.then_some(&video), with_audio.then_some(&audio)).to_vec();
    for (i, &start) in cuts.iter().enumerate() {
        let end = cuts.get(i + 1).copied().unwrap_or(u64::MAX);
        // Audio before the first keyframe goes with the first fragment.
        let within = |s: &&Sample| (s.dts >= start || i == 0) && s.dts < end;
        let fv: Vec<Sample> = v.iter().filter(within).cloned().collect();
        let fa: Vec<Sample> = a.iter().filter(within).cloned().collect();
        assert!(fv[0].keyframe, "fragment {i} starts at a keyframe");
        let (fv, fa) = (if with_video { &fv[..] } else { &[] }, if with_audio { &fa[..] } else { &[] });
        for part in fmp4::fragment(i as u32 + 1, fv, fa) {
            out.extend_from_slice(&part);
        }
    }
    (out, cuts.len(), video.codec, audio.codec)
}

/// ffprobe's streams of `file` with frames counted (`-count_frames`).
fn probe(file: &Path) -> Vec<serde_json::Value> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-count_frames", "-show_streams", "-of", "json"]).arg(file);
    let (ok, out, err) = run_limited(cmd, Duration::from_secs(60));
    assert!(ok, "ffprobe {}: {err}", file.display());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["streams"].as_array().unwrap().clone()
}

/// The `pts,dts,flags` of every packet of stream type `kind` (`v` or `a`) in `file`.
fn packets(file: &Path, kind: &str) -> Vec<String> {
    let mut cmd = Command::new("ffprobe");
    cmd.args(["-v", "error", "-select_streams", kind, "-show_entries", "packet=pts,dts,flags", "-of", "csv=p=0"]);
    cmd.arg(file);
    let (ok, out, err) = run_limited(cmd, Duration::from_secs(60));
    assert!(ok, "ffprobe {}: {err}", file.display());
    out.lines().map(str::to_string).collect()
}

fn stream<'a>(streams: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    streams.iter().find(|s| s["codec_type"] == kind).unwrap_or_else(|| panic!("no {kind} stream in {streams:?}"))
}

fn frames(s: &serde_json::Value) -> i64 {
    s["nb_read_frames"].as_str().unwrap().parse().unwrap()
}

#[test]
fn ffmpeg_flv_to_fmp4_plays() {
    for tool in ["ffmpeg", "ffprobe"] {
        let found = std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
        if !found {
            eprintln!("skipped: {tool} is not installed (Debian package ffmpeg)");
            return;
        }
    }
    let dir = TempDir::new("fmp4");
    let src = dir.path("src.flv");
    let mut enc = Command::new("ffmpeg");
    // B-frames on purpose: composition offsets must come through.
    enc.args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=640x360:rate=30", "-f", "lavfi", "-i"])
        .args(["sine=frequency=440:sample_rate=44100", "-t", "4", "-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .args(["-g", "30", "-bf", "2", "-c:a", "aac", "-f", "flv"])
        .arg(&src);
    let (ok, _, err) = run_limited(enc, Duration::from_secs(120));
    assert!(ok, "ffmpeg making the FLV: {err}");

    let tags = flv_tags(&Bytes::from(std::fs::read(&src).unwrap()));
    let negative_or_positive_cts = tags
        .iter()
        .filter(|m| m.kind == MediaKind::Video && !m.is_video_header())
        .filter_map(|m| fmp4::sample_of(m, 0, 0))
        .filter(|s| s.cts != 0)
        .count();
    assert!(negative_or_positive_cts > 60, "B-frames give most frames a composition offset");
    let (bytes, fragments, vcodec, acodec) = mux(&tags, true, true);
    assert_eq!(mux(&tags, true, true).0, bytes, "the same input gives the same bytes");
    assert_eq!(fragments, 4, "one fragment per second of a 4 s stream with a keyframe every 30 frames");
    // x264 chooses High profile level 3.0 for 640x360 at 30 fps.
    assert_eq!((vcodec.as_str(), acodec.as_str()), ("avc1.64001e", "mp4a.40.2"));
    let out = dir.path("out.mp4");
    std::fs::write(&out, &bytes).unwrap();

    let ours = probe(&out);
    assert_eq!(ours.len(), 2, "{ours:?}");
    let (v, a) = (stream(&ours, "video"), stream(&ours, "audio"));
    assert_eq!((v["id"].as_str(), a["id"].as_str()), (Some("0x1"), Some("0x2")), "track ids");
    assert_eq!(
        (v["codec_name"].as_str(), v["width"].as_i64(), v["height"].as_i64()),
        (Some("h264"), Some(640), Some(360))
    );
    assert_eq!(v["profile"], "High");
    assert_eq!(frames(v), 120);
    let duration: f64 = v["duration"].as_str().unwrap().parse().unwrap();
    assert!((3.9..=4.1).contains(&duration), "video duration {duration} s");
    assert_eq!(
        (a["codec_name"].as_str(), a["sample_rate"].as_str(), a["channels"].as_i64()),
        (Some("aac"), Some("44100"), Some(1))
    );
    let theirs = probe(&src);
    let (ours_audio, src_audio) = (frames(a), frames(stream(&theirs, "audio")));
    assert!((ours_audio - src_audio).abs() <= 1, "audio frames: {ours_audio} muxed, {src_audio} in ffmpeg's FLV");

    // Every packet keeps its decode and presentation time (ms in both files) and its keyframe flag.
    for kind in ["v", "a"] {
        let (ours, theirs) = (packets(&out, kind), packets(&src, kind));
        assert_eq!(ours.len(), if kind == "v" { 120 } else { theirs.len() });
        assert_eq!(ours, theirs, "{kind} packets (pts,dts,flags)");
    }

    decodes_cleanly(&out);

    // One track alone (its id stays 1 or 2): the same packets as in the source.
    for (with_video, kind, name, id) in [(true, "v", "video", "0x1"), (false, "a", "audio", "0x2")] {
        let file = dir.path(&format!("{name}.mp4"));
        std::fs::write(&file, mux(&tags, with_video, !with_video).0).unwrap();
        let streams = probe(&file);
        assert_eq!(streams.len(), 1, "{streams:?}");
        assert_eq!((streams[0]["codec_type"].as_str(), streams[0]["id"].as_str()), (Some(name), Some(id)));
        assert_eq!(packets(&file, kind), packets(&src, kind), "{name} alone");
        decodes_cleanly(&file);
    }
}

/// `ffmpeg -v error -i FILE -f null -` succeeds and prints nothing.
fn decodes_cleanly(file: &Path) {
    let mut dec = Command::new("ffmpeg");
    dec.args(["-v", "error", "-i"]).arg(file).args(["-f", "null", "-"]);
    let (ok, stdout, stderr) = run_limited(dec, Duration::from_secs(60));
    assert!(ok && stderr.is_empty(), "ffmpeg decoding {} reported: {stderr}{stdout}", file.display());
}
