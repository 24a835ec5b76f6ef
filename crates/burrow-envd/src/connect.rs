//! The Connect protocol pieces envd needs: error codes and bodies, 5-byte envelopes,
//! end-stream frames, and an incremental envelope decoder for streamed bodies.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Content type of unary JSON requests and responses.
pub const CONTENT_TYPE_UNARY_JSON: &str = "application/json";
/// Content type of streaming JSON requests and responses.
pub const CONTENT_TYPE_STREAM_JSON: &str = "application/connect+json";
/// Header carrying the client's deadline in milliseconds.
pub const HEADER_TIMEOUT_MS: &str = "connect-timeout-ms";
/// E2B header: seconds of silence after which a stream gets a keepalive event.
pub const HEADER_KEEPALIVE_INTERVAL: &str = "keepalive-ping-interval";
/// Envelope flag: the frame is the end-of-stream message.
pub const FLAG_END_STREAM: u8 = 0x02;
/// Envelope flag: the payload is compressed (we never negotiate compression).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Upper bound for one enveloped message; envd messages are small, input chunks included.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Connect error codes (https://connectrpc.com/docs/protocol#error-codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

const ALL_CODES: [Code; 16] = [
    Code::Canceled,
    Code::Unknown,
    Code::InvalidArgument,
    Code::DeadlineExceeded,
    Code::NotFound,
    Code::AlreadyExists,
    Code::PermissionDenied,
    Code::ResourceExhausted,
    Code::FailedPrecondition,
    Code::Aborted,
    Code::OutOfRange,
    Code::Unimplemented,
    Code::Internal,
    Code::Unavailable,
    Code::DataLoss,
    Code::Unauthenticated,
];

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    pub fn parse(text: &str) -> Option<Code> {
        ALL_CODES.into_iter().find(|c| c.as_str() == text)
    }

    /// HTTP status of a unary error response with this code.
    pub fn http_status(self) -> u16 {
        match self {
            Code::Canceled => 499,
            Code::Unknown => 500,
            Code::InvalidArgument => 400,
            Code::DeadlineExceeded => 504,
            Code::NotFound => 404,
            Code::AlreadyExists => 409,
            Code::PermissionDenied => 403,
            Code::ResourceExhausted => 429,
            Code::FailedPrecondition => 400,
            Code::Aborted => 409,
            Code::OutOfRange => 400,
            Code::Unimplemented => 501,
            Code::Internal => 500,
            Code::Unavailable => 503,
            Code::DataLoss => 500,
            Code::Unauthenticated => 401,
        }
    }

    /// Code a client infers from a non-Connect HTTP error status.
    pub fn from_http_status(status: u16) -> Code {
        match status {
            400 => Code::InvalidArgument,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::AlreadyExists,
            413 | 429 => Code::ResourceExhausted,
            499 => Code::Canceled,
            501 => Code::Unimplemented,
            502 | 503 => Code::Unavailable,
            504 => Code::DeadlineExceeded,
            _ => Code::Unknown,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Ok(Code::parse(&text).unwrap_or(Code::Unknown))
    }
}

/// A Connect error: `{"code":"not_found","message":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ConnectError {
    pub code: Code,
    #[serde(default)]
    pub message: String,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    /// JSON body of a unary error response.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{\"code\":\"internal\"}".to_vec())
    }
}

/// JSON payload of an end-stream frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndStream {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ConnectError>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Frames one message: `[flags:u8][len:u32 BE][payload]`.
pub fn encode_envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flags);
    // Messages are bounded far below 4 GiB by construction (pipe chunks, JSON replies).
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_slice(payload);
    out.freeze()
}

/// Frames a serializable message with flags 0.
pub fn encode_message<T: Serialize>(message: &T) -> Bytes {
    let json = serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec());
    encode_envelope(0, &json)
}

/// The final frame of a stream: `{}` on success, `{"error":{…}}` on failure.
pub fn end_stream_frame(error: Option<&ConnectError>) -> Bytes {
    let end = EndStream {
        error: error.cloned(),
        metadata: serde_json::Map::new(),
    };
    let json = serde_json::to_vec(&end).unwrap_or_else(|_| b"{}".to_vec());
    encode_envelope(FLAG_END_STREAM, &json)
}

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub flags: u8,
    pub payload: Bytes,
}

impl Frame {
    pub fn is_end_stream(&self) -> bool {
        self.flags & FLAG_END_STREAM != 0
    }

    /// Parses the payload of a data frame as JSON.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConnectError> {
        if self.flags & FLAG_COMPRESSED != 0 {
            return Err(ConnectError::new(
                Code::Unimplemented,
                "compressed messages are not supported (use identity encoding)",
            ));
        }
        serde_json::from_slice(&self.payload)
            .map_err(|e| ConnectError::invalid_argument(format!("invalid message: {e}")))
    }

    /// Interprets an end-stream frame: `Ok(())` for success, the carried error otherwise.
    pub fn end_stream_result(&self) -> Result<(), ConnectError> {
        let end: EndStream = serde_json::from_slice(&self.payload).map_err(|e| {
            ConnectError::new(Code::Internal, format!("invalid end-stream frame: {e}"))
        })?;
        match end.error {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// Incremental decoder: feed it body chunks, take complete frames out.
#[derive(Debug, Default)]
pub struct EnvelopeDecoder {
    buffer: BytesMut,
}

impl EnvelopeDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buffer.extend_from_slice(chunk);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, ConnectError> {
        if self.buffer.len() < 5 {
            return Ok(None);
        }
        let flags = self.buffer[0];
        let len = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if len > MAX_MESSAGE_BYTES {
            return Err(ConnectError::new(
                Code::ResourceExhausted,
                format!("message of {len} bytes exceeds the {MAX_MESSAGE_BYTES} byte limit"),
            ));
        }
        if self.buffer.len() < 5 + len {
            return Ok(None);
        }
        self.buffer.advance(5);
        let payload = self.buffer.split_to(len).freeze();
        Ok(Some(Frame { flags, payload }))
    }

    /// Call at end of body: leftover bytes mean a truncated frame.
    pub fn finish(&self) -> Result<(), ConnectError> {
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(ConnectError::invalid_argument(format!(
                "request body ended inside a frame ({} stray bytes)",
                self.buffer.len()
            )))
        }
    }
}

/// Turns a stream of body chunks into a stream of frames.
pub fn decode_frames<S, E>(body: S) -> impl futures::Stream<Item = Result<Frame, ConnectError>>
where
    S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    futures::stream::unfold(
        (body, EnvelopeDecoder::new(), false),
        |(mut body, mut decoder, done)| async move {
            use futures::StreamExt;
            if done {
                return None;
            }
            loop {
                match decoder.next_frame() {
                    Err(e) => return Some((Err(e), (body, decoder, true))),
                    Ok(Some(frame)) => return Some((Ok(frame), (body, decoder, false))),
                    Ok(None) => {}
                }
                match body.next().await {
                    Some(Ok(chunk)) => decoder.push(&chunk),
                    Some(Err(e)) => {
                        let err = ConnectError::new(
                            Code::Unavailable,
                            format!("reading stream body failed: {e}"),
                        );
                        return Some((Err(err), (body, decoder, true)));
                    }
                    None => {
                        return match decoder.finish() {
                            Ok(()) => None,
                            Err(e) => Some((Err(e), (body, decoder, true))),
                        };
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn envelope_round_trip_split_across_chunks() {
        let frame = encode_envelope(0, br#"{"a":1}"#);
        let end = end_stream_frame(Some(&ConnectError::not_found("gone")));
        let mut all = frame.to_vec();
        all.extend_from_slice(&end);
        let mut decoder = EnvelopeDecoder::new();
        let mut frames = Vec::new();
        for byte in all {
            decoder.push(&[byte]);
            while let Some(f) = decoder.next_frame().unwrap() {
                frames.push(f);
            }
        }
        decoder.finish().unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[0].payload[..], br#"{"a":1}"#);
        assert!(!frames[0].is_end_stream());
        assert!(frames[1].is_end_stream());
        let err = frames[1].end_stream_result().unwrap_err();
        assert_eq!(err.code, Code::NotFound);
        assert_eq!(err.message, "gone");
    }

    #[test]
    fn success_end_stream_is_empty_object() {
        let end = end_stream_frame(None);
        assert_eq!(&end[..], b"\x02\x00\x00\x00\x02{}");
    }

    #[test]
    fn oversized_frame_is_rejected() {
        let mut decoder = EnvelopeDecoder::new();
        decoder.push(&[0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            decoder.next_frame().unwrap_err().code,
            Code::ResourceExhausted
        );
    }

    #[test]
    fn truncated_body_is_an_error() {
        let body = futures::stream::iter(vec![Ok::<_, String>(Bytes::from_static(&[
            0, 0, 0, 0, 9, b'{',
        ]))]);
        let frames: Vec<_> = futures::executor::block_on(decode_frames(body).collect());
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].as_ref().unwrap_err().code, Code::InvalidArgument);
    }

    #[test]
    fn codes_round_trip_and_map_to_http() {
        for code in ALL_CODES {
            assert_eq!(Code::parse(code.as_str()), Some(code));
        }
        assert_eq!(Code::NotFound.http_status(), 404);
        assert_eq!(Code::Unauthenticated.http_status(), 401);
        assert_eq!(Code::from_http_status(503), Code::Unavailable);
        let body = ConnectError::new(Code::AlreadyExists, "x").to_json();
        assert_eq!(body, br#"{"code":"already_exists","message":"x"}"#);
    }
}
