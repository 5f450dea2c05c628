//! The media playlist of a packager's state (RFC 8216bis), with Low-Latency HLS's parts, preload hint and server
//! control when parts are on. Everything in it comes from the segments, so relays with the same segments write
//! the same lines.

use std::fmt::Write;

use super::packager::{Init, Segment, State};

/// Parts are listed for the segments in the last this-many target durations (RFC 8216bis 4.4.4.9: parts older
/// than three target durations SHOULD leave the playlist).
const PART_SEGMENTS: usize = 3;

/// Milliseconds as seconds with three decimals (no float formatting: the same text on every relay).
fn secs(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Unix milliseconds as an ISO 8601 date-time in UTC (EXT-X-PROGRAM-DATE-TIME).
pub fn iso8601(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, min, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
}

/// The playlist text. `ll` lists parts and the preload hint (off when parts are off).
pub fn render(s: &State) -> String {
    let set = s.settings;
    let ll = set.part_ms > 0;
    let listed: Vec<&Segment> = {
        let skip = s.segments.len().saturating_sub(set.window);
        s.segments.iter().skip(skip).map(|x| x.as_ref()).collect()
    };
    let open = if s.ended.is_some() { None } else { s.open() };
    let mut out = String::with_capacity(2048);
    let target = (set.segment_ms + 999) / 1000;
    let _ = writeln!(out, "#EXTM3U\n#EXT-X-VERSION:{}", if ll { 9 } else { 7 });
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    if ll {
        // Parts end within a millisecond of --hls-part (whole-millisecond timestamps): the target says so, and
        // the hold-back is three targets (RFC 8216bis asks at least two).
        let target = set.part_ms + 1;
        let _ = writeln!(out, "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={}", secs(3 * target));
        let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={}", secs(target));
    } else {
        let _ = writeln!(out, "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES");
    }
    let first = listed.first().map(|x| x.msn).or(open.as_ref().map(|o| o.msn)).unwrap_or(0);
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
    // Discontinuities before the first listed segment: those that left, and those kept but not listed.
    let hidden = s.segments.len().saturating_sub(listed.len());
    let disc = s.discontinuity_seq + s.segments.iter().take(hidden).filter(|x| x.discontinuity).count() as u64;
    if disc > 0 {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{disc}");
    }
    let mut map: Option<String> = None;
    let mut write_head = |out: &mut String, init: &Init, discontinuity: bool, start: i64, first: bool| {
        if discontinuity && !first {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if map.as_deref() != Some(init.name.as_str()) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", init.name);
            map = Some(init.name.clone());
        }
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(start));
    };
    // The open segment counts as one of the segments whose parts are listed.
    // Segments up to a gap (the windows without media of a failover) are listed whole, without their parts: a
    // low-latency player then loads them, and the gap, as segments, which is how hls.js learns that the hole after
    // the last media is a gap to skip. (With the parts listed it went from the last part before the hole to the
    // first after it and sat in the hole, 11 s one run in three; with the gap's parts listed as GAP=YES it retried
    // the first of them until they left the playlist.)
    let after_gap = listed.iter().rposition(|x| x.gap).map_or(0, |g| g + 1);
    let parts_from =
        listed.len().saturating_sub(if open.is_some() { PART_SEGMENTS - 1 } else { PART_SEGMENTS }).max(after_gap);
    for (i, seg) in listed.iter().enumerate() {
        write_head(&mut out, &seg.init, seg.discontinuity, seg.start, i == 0);
        if ll && i >= parts_from && !seg.gap {
            for (n, p) in seg.parts.iter().enumerate() {
                let ind = if p.independent { ",INDEPENDENT=YES" } else { "" };
                let _ = writeln!(out, "#EXT-X-PART:DURATION={},URI=\"p{}.{n}.m4s\"{ind}", secs(p.duration_ms), seg.msn);
            }
        }
        if seg.gap {
            out.push_str("#EXT-X-GAP\n");
        }
        let _ = writeln!(out, "#EXTINF:{},\ns{}.m4s", secs(seg.listed_ms), seg.msn);
    }
    if let Some(o) = &open {
        if ll {
            write_head(&mut out, &o.init, o.discontinuity, o.start, listed.is_empty());
            for (n, p) in o.parts.iter().enumerate() {
                let ind = if p.independent { ",INDEPENDENT=YES" } else { "" };
                let _ = writeln!(out, "#EXT-X-PART:DURATION={},URI=\"p{}.{n}.m4s\"{ind}", secs(p.duration_ms), o.msn);
            }
            let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p{}.{}.m4s\"", o.msn, o.parts.len());
        }
    }
    if s.ended.is_some() {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::packager::tests::{feed, join, settings};
    use super::super::packager::Packager;
    use super::*;
    use crate::hub::Tap;

    #[test]
    fn dates() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_796_428_800_123), "2026-12-05T00:00:00.123Z");
        assert_eq!(iso8601(951_782_400_000 + 86_399_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(secs(2000), "2.000");
        assert_eq!(secs(333), "0.333");
    }

    #[test]
    fn a_low_latency_playlist() {
        let p = Packager::new("live", "k", settings());
        feed(&p, 1_000_000_500, 1_000_013_000, 60);
        let text = render(&p.state());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#EXTM3U");
        assert!(lines.contains(&"#EXT-X-TARGETDURATION:2"));
        assert!(lines.contains(&"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.503"));
        assert!(lines.contains(&"#EXT-X-PART-INF:PART-TARGET=0.501"));
        assert!(lines.contains(&"#EXT-X-MEDIA-SEQUENCE:500002"), "{text}");
        assert_eq!(lines.iter().filter(|l| l.starts_with("#EXTINF:2.000,")).count(), 4);
        assert_eq!(lines.iter().filter(|l| l.starts_with("#EXT-X-MAP:URI=\"init-")).count(), 1);
        assert!(lines.contains(&"#EXT-X-PROGRAM-DATE-TIME:1970-01-12T13:46:44.500Z"), "{text}");
        // Parts of the last segments only, and a hint for the next part.
        assert!(!text.contains("p500002.0.m4s"), "{text}");
        assert!(text.contains("#EXT-X-PART:DURATION=0.500,URI=\"p500005.0.m4s\",INDEPENDENT=YES"), "{text}");
        assert!(text.contains("#EXT-X-PART:DURATION=0.500,URI=\"p500005.1.m4s\"\n"), "{text}");
        assert!(lines.last().unwrap().starts_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p500006."), "{text}");
        assert!(!text.contains("ENDLIST"));
        p.end(true);
        let text = render(&p.state());
        assert!(text.ends_with("s500006.m4s\n#EXT-X-ENDLIST\n"), "{text}");
        assert!(!text.contains("PRELOAD-HINT"));
    }

    #[test]
    fn without_parts_a_plain_playlist() {
        let p = Packager::new("live", "k", super::super::packager::HlsSettings { part_ms: 0, ..settings() });
        feed(&p, 1_000_000_500, 1_000_009_000, 60);
        let text = render(&p.state());
        assert!(!text.contains("EXT-X-PART") && !text.contains("PRELOAD"), "{text}");
        assert!(text.contains("#EXT-X-VERSION:7\n"));
        assert_eq!(p.state().segments[0].parts.len(), 1, "one fragment per segment");
    }

    #[test]
    fn segments_up_to_a_gap_are_listed_whole_and_parts_resume_after_it() {
        let p = Packager::new("live", "k", settings());
        // The source stops at ..007_000; a new one (a failover) starts at ..011_200: window 500_004 has no media.
        feed(&p, 1_000_000_500, 1_000_007_000, 60);
        join(&p, 1_000_011_200, 1_000_011_200, 1_000_012_300, 60);
        let text = render(&p.state());
        let gap = text.find("#EXT-X-GAP\n#EXTINF:2.000,\ns500004.m4s\n").unwrap_or_else(|| panic!("{text}"));
        let (before, after) = text.split_at(gap);
        assert!(before.contains("s500003.m4s") && !before.contains("#EXT-X-PART:"), "{text}");
        assert!(after.contains("URI=\"p500005.0.m4s\",INDEPENDENT=YES"), "parts after the gap: {text}");
        assert!(after.contains("#EXT-X-PRELOAD-HINT"), "{text}");
        assert!(!text.contains("GAP=YES"), "{text}");
        // Once the gap has left the parts' reach, parts are listed as usual.
        join(&p, 1_000_011_200, 1_000_012_300, 1_000_021_300, 60);
        let text = render(&p.state());
        assert!(!text.contains("#EXT-X-GAP"), "{text}");
        assert!(text.lines().filter(|l| l.starts_with("#EXT-X-PART:")).count() > 6, "{text}");
    }
}
