//! Framing of BGP messages on a byte stream for `tokio_util::codec`: the
//! header's marker, length and type are checked here (RFC 4271 section
//! 6.1), bodies are decoded by `message`.

use crate::message::{DecodeError, Message, Notification, HEADER_LEN, MARKER, MAX_LEN};
use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Why the byte stream could not be read as BGP.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("{0}")]
    Malformed(#[from] DecodeError),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
}

/// Frames BGP messages. `four_octet_as` is set once both OPENs carried the
/// 4-octet AS capability; it decides how AS_PATH is written and read.
#[derive(Debug, Default)]
pub struct BgpCodec {
    pub four_octet_as: bool,
}

impl Decoder for BgpCodec {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        if src[..16] != MARKER {
            return Err(DecodeError {
                notification: Notification::new(1, 1),
                what: "the marker is not all ones".into(),
            }
            .into());
        }
        let len = usize::from(u16::from_be_bytes([src[16], src[17]]));
        if !(HEADER_LEN..=MAX_LEN).contains(&len) {
            return Err(DecodeError {
                notification: Notification {
                    code: 1,
                    subcode: 2,
                    data: src[16..18].to_vec(),
                },
                what: format!("message length {len}"),
            }
            .into());
        }
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        let kind = src[18];
        let frame = src.split_to(len);
        let message = Message::decode(kind, &frame[HEADER_LEN..], self.four_octet_as)?;
        Ok(Some(message))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        match self.decode(src)? {
            Some(m) => Ok(Some(m)),
            None => {
                src.advance(src.len());
                Ok(None)
            }
        }
    }
}

impl Encoder<Message> for BgpCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(self.four_octet_as, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_frames_wait_and_whole_ones_decode() {
        let mut codec = BgpCodec::default();
        let mut wire = BytesMut::new();
        Message::Keepalive.encode(true, &mut wire);
        Message::Keepalive.encode(true, &mut wire);
        let mut buf = BytesMut::from(&wire[..25]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Message::Keepalive));
        assert_eq!(codec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(&wire[25..]);
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Message::Keepalive));
    }

    #[test]
    fn garbage_header_is_a_header_error() {
        let mut codec = BgpCodec::default();
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        match codec.decode(&mut buf) {
            Err(CodecError::Malformed(e)) => {
                assert_eq!((e.notification.code, e.notification.subcode), (1, 1))
            }
            other => panic!("{other:?}"),
        }
        let mut bad_len = BytesMut::from(&MARKER[..]);
        bad_len.extend_from_slice(&[0x20, 0x00, 4]);
        match codec.decode(&mut bad_len) {
            Err(CodecError::Malformed(e)) => {
                assert_eq!((e.notification.code, e.notification.subcode), (1, 2))
            }
            other => panic!("{other:?}"),
        }
    }
}
