//! Length-prefixed framing (a 4-byte big-endian size, then that many bytes), sans I/O: the caller
//! feeds bytes it read from a socket and takes whole frames out.

use bytes::{Buf, Bytes, BytesMut};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("negative frame size {0}")]
    NegativeSize(i32),
}

/// Splits a byte stream into frames, rejecting a frame whose declared size is over the limit
/// before any buffer for it is reserved.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl FrameDecoder {
    pub fn new(max_frame_bytes: usize) -> Self {
        Self { max_frame_bytes }
    }

    /// Takes the next whole frame (without its size prefix) off the front of `buf`, or returns
    /// `Ok(None)` when more bytes are needed. `buf` is only ever asked to grow to the declared
    /// size of a frame that is within the limit.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let declared = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if declared < 0 {
            return Err(FrameError::NegativeSize(declared));
        }
        let size = declared as usize;
        if size > self.max_frame_bytes {
            return Err(FrameError::TooLarge {
                size,
                limit: self.max_frame_bytes,
            });
        }
        if buf.len() < 4 + size {
            buf.reserve(4 + size - buf.len());
            return Ok(None);
        }
        buf.advance(4);
        Ok(Some(buf.split_to(size).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_frames_and_waits_for_more() {
        let decoder = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&[0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 2, b'x'][..]);
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap(), &b"abc"[..]);
        assert_eq!(decoder.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"y");
        assert_eq!(decoder.decode(&mut buf).unwrap().unwrap(), &b"xy"[..]);
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_oversized_frame_before_reserving() {
        let decoder = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        let capacity_before = buf.capacity();
        assert_eq!(
            decoder.decode(&mut buf),
            Err(FrameError::TooLarge {
                size: i32::MAX as usize,
                limit: 16
            })
        );
        assert_eq!(buf.capacity(), capacity_before);
    }

    #[test]
    fn rejects_negative_size() {
        let decoder = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xfe][..]);
        assert_eq!(decoder.decode(&mut buf), Err(FrameError::NegativeSize(-2)));
    }
}
