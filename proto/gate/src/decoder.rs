//! [`FrameDecoder`]: cuts a TCP byte stream into frames, over a buffer the caller provides
//! (no allocation), one frame at a time and without copying them out.
//!
//! ```
//! # use gatehouse_gate_proto::{FrameDecoder, MAX_FRAME_LEN};
//! let mut decoder = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
//! let mut input: &[u8] = &[0x00, 0x1a, 1, 5, 0, 0, 0, 7, 0, 0, 0, 9, /* 16-byte tag */
//!     0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
//! while !input.is_empty() {
//!     let taken = decoder.feed(input);
//!     input = &input[taken..];
//!     while let Some(frame) = decoder.next_frame()? {
//!         assert_eq!(frame.seq(), 9); // verify, parse, handle
//!     }
//! }
//! # Ok::<(), gatehouse_gate_proto::Error>(())
//! ```
//!
//! An error (a length below the minimum, or above [`MAX_FRAME_LEN`] or the buffer) means the
//! stream has lost its framing: answer with an [`ErrorReply`](crate::ErrorReply) if you
//! like and close the connection. The decoder keeps returning the same error.

use crate::frame::{Frame, LENGTH_FIELD_LEN, MAX_FRAME_LEN, MIN_FRAME_LEN};
use crate::Error;

/// Buffers stream bytes and hands out whole frames.
#[derive(Debug)]
pub struct FrameDecoder<B> {
    buf: B,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl<B: AsRef<[u8]> + AsMut<[u8]>> FrameDecoder<B> {
    /// A decoder over `buf`; frames longer than `buf` (or [`MAX_FRAME_LEN`]) are refused, so
    /// give it [`MAX_FRAME_LEN`] bytes to accept every valid frame.
    pub fn new(buf: B) -> FrameDecoder<B> {
        FrameDecoder {
            buf,
            start: 0,
            end: 0,
        }
    }

    /// The longest frame this decoder accepts.
    pub fn max_frame_len(&self) -> usize {
        MAX_FRAME_LEN.min(self.buf.as_ref().len())
    }

    /// Bytes received but not yet handed out as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Moves the unconsumed bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.start > 0 {
            let (start, end) = (self.start, self.end);
            self.buf.as_mut().copy_within(start..end, 0);
            self.end = end - start;
            self.start = 0;
        }
    }

    /// Free space to read into directly (e.g. `socket.read(decoder.spare_mut())`), then
    /// [`FrameDecoder::commit`] the count read. Empty when a whole frame is waiting to be
    /// taken with [`FrameDecoder::next_frame`].
    pub fn spare_mut(&mut self) -> &mut [u8] {
        self.compact();
        let end = self.end;
        self.buf.as_mut().get_mut(end..).unwrap_or(&mut [])
    }

    /// Records that `n` bytes were written into [`FrameDecoder::spare_mut`].
    pub fn commit(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.as_ref().len());
    }

    /// Copies as much of `data` as fits; returns how many bytes were taken. Take the
    /// complete frames out with [`FrameDecoder::next_frame`] and feed the rest.
    pub fn feed(&mut self, data: &[u8]) -> usize {
        let spare = self.spare_mut();
        let n = spare.len().min(data.len());
        if let (Some(dst), Some(src)) = (spare.get_mut(..n), data.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.commit(n);
        n
    }

    /// The next complete frame, `None` if more bytes are needed, or an error if the
    /// stream announces a frame that is too short or too long.
    pub fn next_frame(&mut self) -> Result<Option<Frame<&[u8]>>, Error> {
        let pending = self.buf.as_ref().get(self.start..self.end).unwrap_or(&[]);
        let Some(&[hi, lo]) = pending.get(..LENGTH_FIELD_LEN) else {
            return Ok(None);
        };
        let length = u16::from_be_bytes([hi, lo]);
        let frame_len = usize::from(length) + LENGTH_FIELD_LEN;
        if frame_len < MIN_FRAME_LEN {
            return Err(Error::LengthTooSmall { length });
        }
        let max = self.max_frame_len();
        if frame_len > max {
            return Err(Error::Oversize { frame_len, max });
        }
        if pending.len() < frame_len {
            return Ok(None);
        }
        let begin = self.start;
        self.start += frame_len;
        if self.start == self.end {
            // Everything consumed: the next frame starts at the front, no copy needed.
            self.start = 0;
            self.end = 0;
        }
        let bytes = self
            .buf
            .as_ref()
            .get(begin..begin + frame_len)
            .unwrap_or(&[]);
        Frame::new_checked(bytes).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Decision, Message};
    use crate::{verify, GateKey, Reason, Repr};
    use std::vec::Vec;

    const KEY: GateKey = [3; 32];

    fn decision(seq: u32) -> Vec<u8> {
        let repr = Repr {
            gate_id: 7,
            message: Message::Decision(Decision {
                seq,
                reason: Reason::Granted,
                relay_ms: 500,
            }),
        };
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = repr.emit_sealed(&KEY, &mut buf).unwrap();
        buf[..n].to_vec()
    }

    fn drain<B: AsRef<[u8]> + AsMut<[u8]>>(d: &mut FrameDecoder<B>, seqs: &mut Vec<u32>) {
        while let Some(frame) = d.next_frame().unwrap() {
            verify(&KEY, &frame).unwrap();
            seqs.push(frame.seq());
        }
    }

    #[test]
    fn frames_come_out_whatever_the_chunking() {
        let stream: Vec<u8> = (1..=40).flat_map(decision).collect();
        for chunk in [1, 2, 7, 31, 100, 1000, stream.len()] {
            let mut d = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
            let mut seqs = Vec::new();
            for piece in stream.chunks(chunk) {
                let mut rest = piece;
                while !rest.is_empty() {
                    let n = d.feed(rest);
                    rest = &rest[n..];
                    drain(&mut d, &mut seqs);
                }
            }
            assert_eq!(seqs, (1..=40).collect::<Vec<_>>(), "chunk {chunk}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn reading_into_spare_space_works_like_feed() {
        let stream: Vec<u8> = (1..=5).flat_map(decision).collect();
        let mut buf = [0u8; 64];
        let mut d = FrameDecoder::new(&mut buf[..]);
        let mut seqs = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let spare = d.spare_mut();
            let n = spare.len().min(rest.len()).min(13);
            spare[..n].copy_from_slice(&rest[..n]);
            d.commit(n);
            rest = &rest[n..];
            drain(&mut d, &mut seqs);
        }
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
    }

    #[test]
    fn oversize_length_is_refused_before_the_bytes_arrive() {
        let mut d = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
        d.feed(&[0x04, 0x00]); // 1024 bytes follow: 1026 in all
        let err = d.next_frame().map(|f| f.is_some()).unwrap_err();
        assert_eq!(
            err,
            Error::Oversize {
                frame_len: 1026,
                max: MAX_FRAME_LEN
            }
        );
        // Sticky: the stream has lost its framing.
        assert!(d.next_frame().is_err());

        // A decoder over a smaller buffer refuses what it could not hold.
        let mut tiny = FrameDecoder::new([0u8; 40]);
        tiny.feed(&[0x00, 0x40]);
        assert_eq!(
            tiny.next_frame().map(|f| f.is_some()),
            Err(Error::Oversize {
                frame_len: 0x42,
                max: 40
            })
        );
    }

    #[test]
    fn too_small_length_is_refused() {
        let mut d = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
        d.feed(&[0x00, 0x05, 1, 2, 3]);
        assert_eq!(
            d.next_frame().map(|f| f.is_some()),
            Err(Error::LengthTooSmall { length: 5 })
        );
    }

    #[test]
    fn partial_frame_waits() {
        let bytes = decision(9);
        let mut d = FrameDecoder::new([0u8; MAX_FRAME_LEN]);
        d.feed(&bytes[..bytes.len() - 1]);
        assert!(d.next_frame().unwrap().is_none());
        d.feed(&bytes[bytes.len() - 1..]);
        assert_eq!(d.next_frame().unwrap().map(|f| f.seq()), Some(9));
        assert!(d.next_frame().unwrap().is_none());
    }
}
