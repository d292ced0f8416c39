//! Produce v0-v2 (message formats v0 and v1) are advertised, because librdkafka before 2.10 turns
//! compression off when Produce's lowest version is above 0, but never served. A client that
//! sends one gets what Kafka 4 answers: UNSUPPORTED_VERSION for every partition it named. Those
//! versions are outside what `kafka-protocol` encodes, so the few fields are read and written
//! here by hand.

use bytes::{Buf, BufMut, Bytes, BytesMut};

const UNSUPPORTED_VERSION: i16 = 35;

fn string(buf: &mut Bytes) -> Option<Bytes> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 || buf.remaining() < len as usize {
        return None;
    }
    Some(buf.split_to(len as usize))
}

fn count(buf: &mut Bytes) -> Option<usize> {
    if buf.remaining() < 4 {
        return None;
    }
    // Every element takes at least 4 bytes, so a count beyond that is malformed.
    usize::try_from(buf.get_i32())
        .ok()
        .filter(|&n| n <= buf.remaining() / 4)
}

/// The whole response frame (size prefix included) refusing a Produce v0-v2 request (empty
/// for acks=0, which gets no response), or `None` if the request cannot be read (the caller
/// then closes the connection).
pub fn refuse_old_produce(mut frame: Bytes) -> Option<Bytes> {
    if frame.remaining() < 8 {
        return None;
    }
    frame.advance(2);
    let version = frame.get_i16();
    let correlation_id = frame.get_i32();
    if !(0..=2).contains(&version) {
        return None;
    }
    // The client id: a nullable string (length -1 for null).
    if frame.remaining() >= 2 && frame[..2] == [0xff, 0xff] {
        frame.advance(2);
    } else {
        string(&mut frame)?;
    }
    if frame.remaining() < 6 {
        return None;
    }
    let acks = frame.get_i16();
    frame.advance(4); // timeout
    let mut body = BytesMut::new();
    let topics = count(&mut frame)?;
    body.put_i32(topics as i32);
    for _ in 0..topics {
        let name = string(&mut frame)?;
        body.put_i16(name.len() as i16);
        body.put_slice(&name);
        let partitions = count(&mut frame)?;
        body.put_i32(partitions as i32);
        for _ in 0..partitions {
            if frame.remaining() < 8 {
                return None;
            }
            let partition = frame.get_i32();
            let records = usize::try_from(frame.get_i32()).unwrap_or(0);
            if frame.remaining() < records {
                return None;
            }
            frame.advance(records);
            body.put_i32(partition);
            body.put_i16(UNSUPPORTED_VERSION);
            body.put_i64(-1); // base offset
            if version >= 2 {
                body.put_i64(-1); // log append time
            }
        }
    }
    if acks == 0 {
        return Some(Bytes::new());
    }
    if version >= 1 {
        body.put_i32(0); // throttle time
    }
    let mut out = BytesMut::with_capacity(8 + body.len());
    out.put_i32(4 + body.len() as i32);
    out.put_i32(correlation_id);
    out.put_slice(&body);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: i16) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(0);
        b.put_i16(version);
        b.put_i32(77);
        b.put_i16(3);
        b.put_slice(b"cli");
        b.put_i16(1); // acks
        b.put_i32(1000);
        b.put_i32(1); // topics
        b.put_i16(1);
        b.put_slice(b"t");
        b.put_i32(2); // partitions
        for p in [0, 5] {
            b.put_i32(p);
            b.put_i32(3);
            b.put_slice(b"xyz");
        }
        b.freeze()
    }

    #[test]
    fn every_partition_gets_unsupported_version() {
        for version in 0..=2 {
            let mut r = refuse_old_produce(request(version)).unwrap();
            assert_eq!(r.get_i32() as usize, r.remaining());
            assert_eq!(r.get_i32(), 77);
            assert_eq!(r.get_i32(), 1);
            assert_eq!(r.get_i16(), 1);
            assert_eq!(&r.split_to(1)[..], b"t");
            assert_eq!(r.get_i32(), 2);
            for p in [0, 5] {
                assert_eq!((r.get_i32(), r.get_i16(), r.get_i64()), (p, 35, -1));
                if version >= 2 {
                    assert_eq!(r.get_i64(), -1);
                }
            }
            if version >= 1 {
                assert_eq!(r.get_i32(), 0);
            }
            assert!(!r.has_remaining());
        }
    }

    #[test]
    fn acks_zero_gets_no_response() {
        let mut r = BytesMut::from(&request(1)[..]);
        r[13..15].copy_from_slice(&0i16.to_be_bytes());
        assert_eq!(refuse_old_produce(r.freeze()), Some(Bytes::new()));
    }

    #[test]
    fn malformed_requests_are_none() {
        let full = request(1);
        for cut in 0..full.len() {
            assert!(
                refuse_old_produce(full.slice(..cut)).is_none(),
                "cut at {cut}"
            );
        }
        let mut huge = BytesMut::from(&full[..]);
        huge[21..25].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(refuse_old_produce(huge.freeze()).is_none());
    }
}
