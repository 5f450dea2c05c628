//! FLV framing: the file header and the tag header and PreviousTagSize around a payload (no I/O).

use bytes::{BufMut, Bytes, BytesMut};

use super::proto::{Media, MediaKind};

/// The FLV file header (signature, version, flags, header size) and PreviousTagSize0.
pub fn file_header(audio: bool, video: bool) -> Bytes {
    let mut b = BytesMut::with_capacity(13);
    b.put_slice(b"FLV\x01");
    b.put_u8(if audio { 4 } else { 0 } | if video { 1 } else { 0 });
    b.put_u32(9);
    b.put_u32(0);
    b.freeze()
}

/// The 11-byte FLV tag header and the 4-byte PreviousTagSize that go around `media`'s payload.
pub fn tag_frame(media: &Media, timestamp: u32) -> Bytes {
    let len = media.payload.len() as u32;
    let kind = match media.kind {
        MediaKind::Audio => 8,
        MediaKind::Video => 9,
        MediaKind::Data => 18,
    };
    let mut b = BytesMut::with_capacity(15);
    b.put_u8(kind);
    b.put_slice(&len.to_be_bytes()[1..]);
    // FLV keeps the low 24 bits of the timestamp, then the high 8 bits.
    b.put_slice(&timestamp.to_be_bytes()[1..]);
    b.put_u8((timestamp >> 24) as u8);
    b.put_slice(&[0, 0, 0]);
    b.put_u32(11 + len);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        let m = Media { kind: MediaKind::Video, timestamp: 0, payload: Bytes::from_static(&[0x17, 1, 2]) };
        let t = tag_frame(&m, 0x0102_0304);
        assert_eq!(&t[..], &[9, 0, 0, 3, 0x02, 0x03, 0x04, 0x01, 0, 0, 0, 0, 0, 0, 14]);
        assert_eq!(&file_header(true, true)[..], b"FLV\x01\x05\0\0\0\x09\0\0\0\0");
    }
}
