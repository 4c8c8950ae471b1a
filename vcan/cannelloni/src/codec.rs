//! The cannelloni UDP/SCTP datagram format, version 2: encoding frames into datagrams and decoding
//! datagrams into frames, with no I/O.
//!
//! Everything is big-endian. A datagram is a 5-byte header followed by `count` frames:
//!
//! ```text
//! header: u8 version (2) | u8 op code (0 DATA, 1 ACK, 2 NACK) | u8 sequence number | u16 count
//! frame:  u32 can_id (Linux can_id with the EFF/RTR/ERR flag bits)
//!         | u8 len (bit 7 set: CAN FD; the low 7 bits: payload length, or the DLC of a remote frame)
//!         | u8 flags (CAN FD frames only: canfd_frame.flags)
//!         | len bytes of data (absent for remote frames)
//! ```
//!
//! [`Encoder`] packs frames into as few datagrams as fit a payload size (the link MTU less the IP and
//! UDP headers, as cannelloni computes it), numbering each datagram with a wrapping `u8`. [`decode`]
//! validates a datagram completely — version, op code, every frame's fields against the bytes actually
//! present, classic lengths up to 8, CAN FD lengths among the valid FD lengths, and no bytes after the
//! last frame — and names the field and byte offset of the first problem in a [`DecodeError`]. It never
//! panics, whatever the input.

use vcan::frame::{CAN_ERR_FLAG, CAN_RTR_FLAG, EFF_MAX, FD_LENGTHS};
use vcan::{CanId, FdFlags, Frame, FrameError};

/// The format version this module speaks.
pub const VERSION: u8 = 2;
/// Size of the datagram header (version, op code, sequence number, count).
pub const HEADER_SIZE: usize = 5;
/// Size of a frame's fixed part (can_id and len), without the FD flags byte.
pub const FRAME_BASE_SIZE: usize = 5;
/// Bit 7 of a frame's `len` byte: the frame is a CAN FD frame and a flags byte follows.
pub const LEN_FD_BIT: u8 = 0x80;
/// The encoded size of the largest classic frame (8 data bytes).
pub const MAX_CLASSIC_FRAME_SIZE: usize = FRAME_BASE_SIZE + 8;
/// The encoded size of the largest CAN FD frame (flags byte and 64 data bytes).
pub const MAX_FD_FRAME_SIZE: usize = FRAME_BASE_SIZE + 1 + 64;
/// IPv4 and UDP header sizes, which cannelloni subtracts from the MTU to get the payload size.
pub const IPV4_UDP_OVERHEAD: usize = 20 + 8;
/// IPv6 and UDP header sizes.
pub const IPV6_UDP_OVERHEAD: usize = 40 + 8;

/// A datagram's op code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Frames follow the header; the only op code cannelloni's UDP mode sends.
    Data,
    /// Defined by the format, never sent by cannelloni over UDP.
    Ack,
    /// Defined by the format, never sent by cannelloni over UDP.
    Nack,
}

impl OpCode {
    pub fn byte(self) -> u8 {
        match self {
            OpCode::Data => 0,
            OpCode::Ack => 1,
            OpCode::Nack => 2,
        }
    }

    pub fn from_byte(byte: u8) -> Option<OpCode> {
        match byte {
            0 => Some(OpCode::Data),
            1 => Some(OpCode::Ack),
            2 => Some(OpCode::Nack),
            _ => None,
        }
    }
}

impl std::fmt::Display for OpCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OpCode::Data => "DATA",
            OpCode::Ack => "ACK",
            OpCode::Nack => "NACK",
        })
    }
}

/// One decoded datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// A DATA datagram and its frames, in order (possibly none).
    Data { seq: u8, frames: Vec<Frame> },
    /// An ACK or NACK datagram: only its header is read.
    Control { op: OpCode, seq: u8 },
}

/// The field of a frame a [`DecodeError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    CanId,
    Len,
    Flags,
    Data,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Field::CanId => "can_id",
            Field::Len => "len",
            Field::Flags => "flags",
            Field::Data => "data",
        })
    }
}

/// Why a datagram is not a valid cannelloni version 2 datagram. Offsets count bytes from the start of
/// the datagram; frames are numbered from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {len} bytes is shorter than the {HEADER_SIZE}-byte header")]
    ShortHeader { len: usize },
    #[error("version byte (offset 0) is {found}, expected {VERSION}")]
    Version { found: u8 },
    #[error("op code byte (offset 1) is {found}, not DATA (0), ACK (1) or NACK (2)")]
    OpCode { found: u8 },
    #[error(
        "frame {frame} of {count}: {field} at offset {offset} needs {needed} bytes, only {available} left"
    )]
    Truncated {
        frame: u16,
        count: u16,
        field: Field,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("frame {frame}: len byte 0x{byte:02X} at offset {offset}: {reason}")]
    Length {
        frame: u16,
        offset: usize,
        byte: u8,
        reason: &'static str,
    },
    #[error("frame {frame}: can_id 0x{can_id:08X} at offset {offset}: {reason}")]
    CanId {
        frame: u16,
        offset: usize,
        can_id: u32,
        reason: String,
    },
    #[error("{extra} bytes after the last of {count} frames (offset {offset})")]
    TrailingBytes { count: u16, offset: usize, extra: usize },
}

/// Why frames cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("a datagram payload of {payload} bytes cannot hold the header and a {frame}-byte frame (at least {} bytes)", HEADER_SIZE + frame)]
    PayloadTooSmall { payload: usize, frame: usize },
    #[error("a datagram payload of {0} bytes is larger than UDP allows (65507)")]
    PayloadTooLarge(usize),
}

/// The largest UDP payload over IPv4.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// The number of bytes `frame` takes in a datagram.
pub fn frame_size(frame: &Frame) -> usize {
    match frame {
        Frame::Data { .. } | Frame::Error { .. } => FRAME_BASE_SIZE + frame.payload().len(),
        Frame::Remote { .. } => FRAME_BASE_SIZE,
        Frame::Fd { .. } => FRAME_BASE_SIZE + 1 + frame.payload().len(),
    }
}

/// Appends one frame's encoding to `out`.
pub fn encode_frame(out: &mut Vec<u8>, frame: &Frame) {
    out.extend_from_slice(&frame.linux_can_id().to_be_bytes());
    match frame {
        Frame::Data { .. } | Frame::Error { .. } => {
            let data = frame.payload();
            out.push(data.len() as u8);
            out.extend_from_slice(data);
        }
        Frame::Remote { dlc, .. } => out.push(*dlc),
        Frame::Fd { flags, .. } => {
            let data = frame.payload();
            out.push(LEN_FD_BIT | data.len() as u8);
            out.push(flags.bits());
            out.extend_from_slice(data);
        }
    }
}

/// Writes a datagram header.
pub fn encode_header(out: &mut Vec<u8>, op: OpCode, seq: u8, count: u16) {
    out.push(VERSION);
    out.push(op.byte());
    out.push(seq);
    out.extend_from_slice(&count.to_be_bytes());
}

/// Packs frames into DATA datagrams of at most a payload size, numbering them with a wrapping `u8`.
#[derive(Debug, Clone)]
pub struct Encoder {
    max_payload: usize,
    next_seq: u8,
}

impl Encoder {
    /// An encoder for datagrams of at most `max_payload` bytes, which must hold the header and the
    /// largest frame of the mode (`fd`: a 64-byte CAN FD frame; otherwise an 8-byte classic frame).
    /// The first datagram has sequence number 0.
    pub fn new(max_payload: usize, fd: bool) -> Result<Encoder, EncodeError> {
        let largest = if fd {
            MAX_FD_FRAME_SIZE
        } else {
            MAX_CLASSIC_FRAME_SIZE
        };
        if max_payload < HEADER_SIZE + largest {
            return Err(EncodeError::PayloadTooSmall {
                payload: max_payload,
                frame: largest,
            });
        }
        if max_payload > MAX_UDP_PAYLOAD {
            return Err(EncodeError::PayloadTooLarge(max_payload));
        }
        Ok(Encoder {
            max_payload,
            next_seq: 0,
        })
    }

    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// The sequence number the next datagram gets.
    pub fn next_seq(&self) -> u8 {
        self.next_seq
    }

    /// Starts numbering at `seq` (tests and peers that resume a sequence).
    pub fn set_next_seq(&mut self, seq: u8) {
        self.next_seq = seq;
    }

    /// Encodes `frames`, in order, into as few datagrams as fit; each is `(sequence number, bytes)`.
    ///
    /// No datagram is produced for an empty slice.
    pub fn encode(&mut self, frames: &[Frame]) -> Vec<(u8, Vec<u8>)> {
        let mut datagrams = Vec::new();
        let mut rest = frames;
        while let Some((seq, bytes, taken)) = self.encode_one(rest) {
            datagrams.push((seq, bytes));
            rest = &rest[taken..];
        }
        datagrams
    }

    /// Encodes one datagram of the frames at the front of `frames` (as many as fit, at least one);
    /// returns its sequence number, its bytes and how many frames it holds. `None` for no frames.
    ///
    /// A frame larger than the payload size (a CAN FD frame given to an encoder made for classic frames
    /// with a small payload) goes alone in a datagram of its own, over the size, rather than being lost.
    pub fn encode_one(&mut self, frames: &[Frame]) -> Option<(u8, Vec<u8>, usize)> {
        if frames.is_empty() {
            return None;
        }
        let mut size = HEADER_SIZE;
        let mut taken = 0usize;
        for frame in frames {
            let next = size + frame_size(frame);
            if (next > self.max_payload && taken > 0) || taken == usize::from(u16::MAX) {
                break;
            }
            size = next;
            taken += 1;
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let mut out = Vec::with_capacity(size);
        // `taken` is at most u16::MAX by the loop above.
        encode_header(&mut out, OpCode::Data, seq, taken as u16);
        for frame in &frames[..taken] {
            encode_frame(&mut out, frame);
        }
        Some((seq, out, taken))
    }
}

/// Decodes and validates one datagram.
pub fn decode(datagram: &[u8]) -> Result<Packet, DecodeError> {
    let [version, op, seq, c0, c1, ..] = *datagram else {
        return Err(DecodeError::ShortHeader { len: datagram.len() });
    };
    if version != VERSION {
        return Err(DecodeError::Version { found: version });
    }
    let op = OpCode::from_byte(op).ok_or(DecodeError::OpCode { found: op })?;
    if op != OpCode::Data {
        return Ok(Packet::Control { op, seq });
    }
    let count = u16::from_be_bytes([c0, c1]);
    let mut frames = Vec::with_capacity(usize::from(count).min(datagram.len() / FRAME_BASE_SIZE));
    let mut offset = HEADER_SIZE;
    for index in 0..count {
        let (frame, next) = decode_frame(datagram, offset, index, count)?;
        frames.push(frame);
        offset = next;
    }
    if offset != datagram.len() {
        return Err(DecodeError::TrailingBytes {
            count,
            offset,
            extra: datagram.len() - offset,
        });
    }
    Ok(Packet::Data { seq, frames })
}

/// Takes `needed` bytes at `offset` or says which field was cut short.
fn take(
    datagram: &[u8],
    offset: usize,
    needed: usize,
    field: Field,
    frame: u16,
    count: u16,
) -> Result<&[u8], DecodeError> {
    let available = datagram.len().saturating_sub(offset);
    if available < needed {
        return Err(DecodeError::Truncated {
            frame,
            count,
            field,
            offset,
            needed,
            available,
        });
    }
    Ok(&datagram[offset..offset + needed])
}

/// Decodes the frame at `offset`; returns it and the offset after it.
fn decode_frame(
    datagram: &[u8],
    start: usize,
    index: u16,
    count: u16,
) -> Result<(Frame, usize), DecodeError> {
    let id_bytes = take(datagram, start, 4, Field::CanId, index, count)?;
    let can_id = u32::from_be_bytes([id_bytes[0], id_bytes[1], id_bytes[2], id_bytes[3]]);
    let len_offset = start + 4;
    let len_byte = take(datagram, len_offset, 1, Field::Len, index, count)?[0];
    let mut offset = len_offset + 1;
    let length_error = |reason| DecodeError::Length {
        frame: index,
        offset: len_offset,
        byte: len_byte,
        reason,
    };
    let id_error = |reason: String| DecodeError::CanId {
        frame: index,
        offset: start,
        can_id,
        reason,
    };
    let frame_error = |e: FrameError| id_error(e.to_string());
    let is_fd = len_byte & LEN_FD_BIT != 0;
    let len = usize::from(len_byte & !LEN_FD_BIT);
    let remote = can_id & CAN_RTR_FLAG != 0;
    let error = can_id & CAN_ERR_FLAG != 0;

    if is_fd {
        if len > 64 {
            return Err(length_error("CAN FD length above 64"));
        }
        if !FD_LENGTHS.contains(&len) {
            return Err(length_error(
                "not a valid CAN FD length (0-8, 12, 16, 20, 24, 32, 48, 64)",
            ));
        }
        if remote {
            return Err(id_error(
                "RTR flag on a CAN FD frame (CAN FD has no remote frames)".into(),
            ));
        }
        if error {
            return Err(id_error("ERR flag on a CAN FD frame".into()));
        }
        let flags = take(datagram, offset, 1, Field::Flags, index, count)?[0];
        offset += 1;
        let data = take(datagram, offset, len, Field::Data, index, count)?;
        offset += len;
        let id = CanId::from_linux(can_id).map_err(frame_error)?;
        let frame = Frame::fd(id, data, FdFlags::from_bits(flags)).map_err(frame_error)?;
        return Ok((frame, offset));
    }

    if len > 8 {
        return Err(length_error("classic CAN length above 8"));
    }
    if error {
        if remote {
            return Err(id_error("both ERR and RTR flags set".into()));
        }
        if len != 8 {
            return Err(length_error("an error frame carries exactly 8 data bytes"));
        }
        let data = take(datagram, offset, 8, Field::Data, index, count)?;
        offset += 8;
        let mut detail = [0u8; 8];
        detail.copy_from_slice(data);
        let frame = Frame::error(can_id & EFF_MAX, detail).map_err(frame_error)?;
        return Ok((frame, offset));
    }
    let id = CanId::from_linux(can_id).map_err(frame_error)?;
    if remote {
        // Remote frames carry their DLC in `len` and no data bytes.
        let frame = Frame::remote(id, len as u8).map_err(frame_error)?;
        return Ok((frame, offset));
    }
    let data = take(datagram, offset, len, Field::Data, index, count)?;
    offset += len;
    let frame = Frame::data(id, data).map_err(frame_error)?;
    Ok((frame, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std_id(id: u16) -> CanId {
        CanId::Standard(id)
    }

    fn mixed_frames() -> Vec<Frame> {
        vec![
            Frame::data(std_id(0x123), &[1, 2, 3]).unwrap(),
            Frame::data(CanId::Extended(0x1ABC_DEF0), &[0; 8]).unwrap(),
            Frame::data(std_id(0), &[]).unwrap(),
            Frame::remote(std_id(0x7FF), 5).unwrap(),
            Frame::remote(CanId::Extended(0x1FFF_FFFF), 0).unwrap(),
            Frame::fd(
                std_id(0x42),
                &[0xAA; 64],
                FdFlags {
                    brs: true,
                    esi: false,
                },
            )
            .unwrap(),
            Frame::fd(CanId::Extended(7), &[], FdFlags::default()).unwrap(),
            Frame::fd(
                std_id(0x1),
                &[9; 12],
                FdFlags {
                    brs: false,
                    esi: true,
                },
            )
            .unwrap(),
            Frame::error(0x04, [0, 0x10, 0, 0, 0, 0, 0, 0]).unwrap(),
        ]
    }

    #[test]
    fn the_capture_from_cannelloni_issue_37_decodes() {
        let capture = [
            0x02, 0x00, 0x23, 0x00, 0x01, 0x99, 0xfa, 0x04, 0x4d, 0x08, 0x0c, 0x11, 0x01, 0x00, 0xf2, 0x1d,
            0x0b, 0x02,
        ];
        let expected = Frame::data(
            CanId::Extended(0x19FA_044D),
            &[0x0c, 0x11, 0x01, 0x00, 0xf2, 0x1d, 0x0b, 0x02],
        )
        .unwrap();
        assert_eq!(
            decode(&capture).unwrap(),
            Packet::Data {
                seq: 0x23,
                frames: vec![expected.clone()]
            }
        );
        // And the encoder produces the same bytes.
        let mut encoder = Encoder::new(1472, false).unwrap();
        encoder.set_next_seq(0x23);
        assert_eq!(encoder.encode(&[expected]), vec![(0x23, capture.to_vec())]);
    }

    #[test]
    fn every_kind_of_frame_round_trips() {
        let frames = mixed_frames();
        let mut encoder = Encoder::new(1472, true).unwrap();
        let datagrams = encoder.encode(&frames);
        assert_eq!(datagrams.len(), 1);
        let (seq, bytes) = &datagrams[0];
        assert_eq!(*seq, 0);
        assert_eq!(
            bytes.len(),
            HEADER_SIZE + frames.iter().map(frame_size).sum::<usize>()
        );
        assert_eq!(
            decode(bytes).unwrap(),
            Packet::Data {
                seq: 0,
                frames: frames.clone()
            }
        );
    }

    #[test]
    fn the_wire_layout_matches_the_format() {
        let mut out = Vec::new();
        encode_frame(&mut out, &Frame::remote(CanId::Extended(0x100), 3).unwrap());
        assert_eq!(out, [0xC0, 0x00, 0x01, 0x00, 0x03]);
        out.clear();
        encode_frame(
            &mut out,
            &Frame::fd(
                std_id(0x12),
                &[1, 2],
                FdFlags {
                    brs: true,
                    esi: false,
                },
            )
            .unwrap(),
        );
        assert_eq!(out, [0, 0, 0, 0x12, 0x82, 0x05, 1, 2]);
        out.clear();
        encode_frame(&mut out, &Frame::error(0x20, [1; 8]).unwrap());
        assert_eq!(out[..5], [0x20, 0, 0, 0x20, 8]);
    }

    #[test]
    fn datagrams_split_at_the_payload_size_and_number_wraps() {
        // 72-byte payload (MTU 100 less IPv4 and UDP): header 5 + 5 frames of 13 bytes = 70.
        let frames: Vec<Frame> = (0..23u16)
            .map(|i| Frame::data(std_id(i), &[i as u8; 8]).unwrap())
            .collect();
        let mut encoder = Encoder::new(72, false).unwrap();
        encoder.set_next_seq(254);
        let datagrams = encoder.encode(&frames);
        assert_eq!(datagrams.len(), 5);
        let seqs: Vec<u8> = datagrams.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, [254, 255, 0, 1, 2]);
        let mut decoded = Vec::new();
        for (seq, bytes) in &datagrams {
            assert!(bytes.len() <= 72);
            match decode(bytes).unwrap() {
                Packet::Data { seq: s, frames } => {
                    assert_eq!(s, *seq);
                    decoded.extend(frames);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(decoded, frames);
        assert!(encoder.encode(&[]).is_empty());
        assert_eq!(encoder.next_seq(), 3);
    }

    #[test]
    fn payload_sizes_are_checked() {
        assert_eq!(
            Encoder::new(74, true).unwrap_err(),
            EncodeError::PayloadTooSmall {
                payload: 74,
                frame: MAX_FD_FRAME_SIZE
            }
        );
        assert!(Encoder::new(75, true).is_ok());
        assert!(Encoder::new(17, false).is_err());
        assert!(Encoder::new(18, false).is_ok());
        assert!(Encoder::new(70_000, false).is_err());
    }

    #[test]
    fn control_datagrams_and_empty_data_are_recognised() {
        assert_eq!(
            decode(&[2, 1, 9, 0, 0]).unwrap(),
            Packet::Control {
                op: OpCode::Ack,
                seq: 9
            }
        );
        assert_eq!(
            decode(&[2, 2, 9]).unwrap_err(),
            DecodeError::ShortHeader { len: 3 }
        );
        assert_eq!(
            decode(&[2, 0, 4, 0, 0]).unwrap(),
            Packet::Data {
                seq: 4,
                frames: vec![]
            }
        );
    }

    #[test]
    fn malformed_datagrams_name_the_field_and_offset() {
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (vec![], DecodeError::ShortHeader { len: 0 }),
            (vec![1, 0, 0, 0, 0], DecodeError::Version { found: 1 }),
            (vec![2, 7, 0, 0, 0], DecodeError::OpCode { found: 7 }),
            (
                vec![2, 0, 0, 0, 2, 0, 0, 1, 0x23, 1, 0xAA],
                DecodeError::Truncated {
                    frame: 1,
                    count: 2,
                    field: Field::CanId,
                    offset: 11,
                    needed: 4,
                    available: 0,
                },
            ),
            (
                vec![2, 0, 0, 0, 1, 0, 0, 1, 0x23],
                DecodeError::Truncated {
                    frame: 0,
                    count: 1,
                    field: Field::Len,
                    offset: 9,
                    needed: 1,
                    available: 0,
                },
            ),
            (
                vec![2, 0, 0, 0, 1, 0, 0, 1, 0x23, 8, 1, 2, 3],
                DecodeError::Truncated {
                    frame: 0,
                    count: 1,
                    field: Field::Data,
                    offset: 10,
                    needed: 8,
                    available: 3,
                },
            ),
            (
                vec![2, 0, 0, 0, 1, 0, 0, 1, 0x23, 0x88],
                DecodeError::Truncated {
                    frame: 0,
                    count: 1,
                    field: Field::Flags,
                    offset: 10,
                    needed: 1,
                    available: 0,
                },
            ),
            (
                vec![2, 0, 0, 0, 1, 0, 0, 1, 0x23, 9],
                DecodeError::Length {
                    frame: 0,
                    offset: 9,
                    byte: 9,
                    reason: "classic CAN length above 8",
                },
            ),
            (
                vec![2, 0, 0, 0, 1, 0, 0, 1, 0x23, 0x80 | 65],
                DecodeError::Length {
                    frame: 0,
                    offset: 9,
                    byte: 0xC1,
                    reason: "CAN FD length above 64",
                },
            ),
            (
                vec![2, 0, 0, 0, 1, 0, 0, 1, 0x23, 0x80 | 9],
                DecodeError::Length {
                    frame: 0,
                    offset: 9,
                    byte: 0x89,
                    reason: "not a valid CAN FD length (0-8, 12, 16, 20, 24, 32, 48, 64)",
                },
            ),
            (
                vec![2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0xFF],
                DecodeError::TrailingBytes {
                    count: 1,
                    offset: 10,
                    extra: 1,
                },
            ),
        ];
        for (bytes, expected) in cases {
            assert_eq!(decode(&bytes).unwrap_err(), expected, "{bytes:02X?}");
        }
        // A standard id above 0x7FF, RTR on FD, RTR with a DLC above 8, a short error frame.
        for bytes in [
            vec![2, 0, 0, 0, 1, 0, 0, 0x08, 0x00, 0],
            vec![2, 0, 0, 0, 1, 0x40, 0, 0, 1, 0x80, 0],
            vec![2, 0, 0, 0, 1, 0x40, 0, 0, 1, 9],
            vec![2, 0, 0, 0, 1, 0x20, 0, 0, 4, 2, 0, 0],
            vec![2, 0, 0, 0, 1, 0x60, 0, 0, 4, 8],
        ] {
            let err = decode(&bytes).unwrap_err();
            assert!(
                matches!(
                    err,
                    DecodeError::CanId { frame: 0, .. } | DecodeError::Length { frame: 0, .. }
                ),
                "{bytes:02X?}: {err}"
            );
        }
        let message = decode(&[2, 0, 0, 0, 1, 0, 0, 0x08, 0x00, 0])
            .unwrap_err()
            .to_string();
        assert!(message.contains("can_id 0x00000800 at offset 5"), "{message}");
    }

    #[test]
    fn random_and_truncated_bytes_never_panic() {
        struct XorShift(u64);
        impl XorShift {
            fn next(&mut self) -> u64 {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0
            }
        }
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut encoder = Encoder::new(1472, true).unwrap();
        let valid = encoder.encode(&mixed_frames()).remove(0).1;
        // Every truncation of a valid datagram is an error (never a shorter, silently accepted one).
        for cut in 0..valid.len() {
            assert!(decode(&valid[..cut]).is_err(), "cut at {cut}");
        }
        for _ in 0..20_000 {
            let len = (rng.next() % 200) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            if bytes.len() >= 2 && rng.next().is_multiple_of(2) {
                // Mostly-valid headers reach the frame parser.
                bytes[0] = VERSION;
                bytes[1] = 0;
            }
            let _ = decode(&bytes);
            // Flip one byte of a valid datagram.
            let mut flipped = valid.clone();
            let at = (rng.next() as usize) % flipped.len();
            flipped[at] ^= rng.next() as u8 | 1;
            if let Ok(Packet::Data { frames, .. }) = decode(&flipped) {
                assert!(frames.len() <= usize::from(u16::MAX));
            }
        }
    }
}
