//! Property tests of Connect envelope framing, the parser every agent stream and every stream the
//! server reads from an agent goes through (both sides are untrusted by the other).
//!
//! Bounded: 256 cases per property by default; `PROPTEST_CASES=10000` for a longer local run.

use burrow_envd::connect::{
    Code, ConnectError, EndStream, EnvelopeDecoder, FLAG_END_STREAM, Frame, MAX_MESSAGE_BYTES,
    decode_frames, encode_envelope, end_stream_frame,
};
use bytes::Bytes;
use futures::StreamExt;
use proptest::prelude::*;

/// Splits `data` at the given cut points (taken modulo its length, in order).
fn split_at_cuts(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| {
            if data.is_empty() {
                0
            } else {
                c % (data.len() + 1)
            }
        })
        .collect();
    points.push(0);
    points.push(data.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| data[w[0]..w[1]].to_vec())
        .collect()
}

/// What a decoder makes of a whole body: the frames before the first error, the error if any
/// (the decoder stops at an error), and whether the body ended cleanly.
#[derive(Debug, PartialEq)]
struct Decoded {
    frames: Vec<Frame>,
    error: Option<ConnectError>,
    clean_end: bool,
}

fn decode_chunked(chunks: &[Vec<u8>]) -> Decoded {
    let mut decoder = EnvelopeDecoder::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => {
                    return Decoded {
                        frames,
                        error: Some(error),
                        clean_end: false,
                    };
                }
            }
        }
    }
    Decoded {
        frames,
        error: None,
        clean_end: decoder.finish().is_ok(),
    }
}

/// The async path (`decode_frames`) over the same chunks: items in order.
fn decode_stream(chunks: &[Vec<u8>]) -> Vec<Result<Frame, ConnectError>> {
    let body = futures::stream::iter(
        chunks
            .iter()
            .map(|c| Ok::<_, String>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    futures::executor::block_on(decode_frames(body).collect())
}

fn frames_strategy() -> impl Strategy<Value = Vec<(u8, Vec<u8>)>> {
    prop::collection::vec(
        (any::<u8>(), prop::collection::vec(any::<u8>(), 0..300)),
        0..8,
    )
}

proptest! {
    // 256 cases unless PROPTEST_CASES says otherwise; failures are printed, not persisted.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// encode → decode gives back every frame's flags and payload, whatever the chunking.
    #[test]
    fn envelopes_round_trip_under_any_chunking(
        frames in frames_strategy(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut body = Vec::new();
        for (flags, payload) in &frames {
            body.extend_from_slice(&encode_envelope(*flags, payload));
        }
        let decoded = decode_chunked(&split_at_cuts(&body, &cuts));
        prop_assert_eq!(decoded.error, None);
        prop_assert!(decoded.clean_end);
        let got: Vec<(u8, Vec<u8>)> =
            decoded.frames.iter().map(|f| (f.flags, f.payload.to_vec())).collect();
        prop_assert_eq!(&got, &frames);
        for frame in &decoded.frames {
            prop_assert_eq!(frame.is_end_stream(), frame.flags & FLAG_END_STREAM != 0);
        }
        // The streaming decoder agrees, and ends without an error item.
        let streamed = decode_stream(&split_at_cuts(&body, &cuts));
        prop_assert_eq!(streamed.len(), frames.len());
        for (item, (flags, payload)) in streamed.iter().zip(&frames) {
            let frame = item.as_ref().unwrap();
            prop_assert_eq!(frame.flags, *flags);
            prop_assert_eq!(&frame.payload[..], &payload[..]);
        }
    }

    /// Arbitrary bytes: never a panic, and the result does not depend on how the bytes were
    /// split into chunks (frames, error and clean end all identical to the unsplit body).
    #[test]
    fn arbitrary_bytes_decode_identically_however_split(
        body in prop::collection::vec(any::<u8>(), 0..2000),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let whole = decode_chunked(std::slice::from_ref(&body));
        let split = decode_chunked(&split_at_cuts(&body, &cuts));
        prop_assert_eq!(&split, &whole);
        // Every frame decoded is within the limit, and frames + headers never exceed the input.
        let consumed: usize = whole.frames.iter().map(|f| 5 + f.payload.len()).sum();
        prop_assert!(consumed <= body.len());
        for frame in &whole.frames {
            prop_assert!(frame.payload.len() <= MAX_MESSAGE_BYTES);
            // Payload parsers never panic on what a peer sends.
            let _ = frame.parse::<serde_json::Value>();
            let _ = frame.end_stream_result();
        }
        // The async decoder yields the same frames, then the same error (or a truncation error
        // exactly when the body did not end cleanly).
        let streamed = decode_stream(&split_at_cuts(&body, &cuts));
        let (ok, err): (Vec<_>, Vec<_>) = streamed.into_iter().partition(Result::is_ok);
        let ok: Vec<Frame> = ok.into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(&ok, &whole.frames);
        prop_assert!(err.len() <= 1);
        match (&whole.error, err.first()) {
            (Some(e), Some(Err(s))) => prop_assert_eq!(e, s),
            (None, Some(Err(s))) => {
                prop_assert!(!whole.clean_end);
                prop_assert_eq!(s.code, Code::InvalidArgument);
            }
            (None, None) => prop_assert!(whole.clean_end),
            (whole_err, streamed_err) => {
                prop_assert!(false, "decoders disagree: {whole_err:?} vs {streamed_err:?}")
            }
        }
    }

    /// A declared length over the limit is refused from its 5-byte header alone: the decoder
    /// does not wait for (or reserve room for) a body it will never accept.
    #[test]
    fn oversized_declared_length_errors_at_the_header(
        flags in any::<u8>(),
        len in (MAX_MESSAGE_BYTES as u64 + 1)..=u64::from(u32::MAX),
        prefix in frames_strategy(),
        trailing in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut body = Vec::new();
        for (f, payload) in &prefix {
            body.extend_from_slice(&encode_envelope(*f, payload));
        }
        body.push(flags);
        body.extend_from_slice(&u32::try_from(len).unwrap().to_be_bytes());
        body.extend_from_slice(&trailing);
        let decoded = decode_chunked(&[body]);
        prop_assert_eq!(decoded.frames.len(), prefix.len());
        let error = decoded.error.expect("oversized frame refused");
        prop_assert_eq!(error.code, Code::ResourceExhausted);
    }

    /// A length within the limit but longer than the body is a truncation error at the end,
    /// never a frame.
    #[test]
    fn truncated_frames_are_errors(
        flags in any::<u8>(),
        payload in prop::collection::vec(any::<u8>(), 1..500),
        keep in any::<usize>(),
    ) {
        let frame = encode_envelope(flags, &payload);
        let keep = 1 + keep % (frame.len() - 1); // 1..len-1 bytes: always cut short
        let decoded = decode_chunked(&[frame[..keep].to_vec()]);
        prop_assert!(decoded.frames.is_empty());
        prop_assert_eq!(decoded.error, None);
        prop_assert!(!decoded.clean_end);
    }

    /// End-stream frames carry their error (code and message) through encode → decode.
    #[test]
    fn end_stream_errors_round_trip(code_index in 0usize..16, message in ".{0,200}") {
        let codes = [
            Code::Canceled, Code::Unknown, Code::InvalidArgument, Code::DeadlineExceeded,
            Code::NotFound, Code::AlreadyExists, Code::PermissionDenied, Code::ResourceExhausted,
            Code::FailedPrecondition, Code::Aborted, Code::OutOfRange, Code::Unimplemented,
            Code::Internal, Code::Unavailable, Code::DataLoss, Code::Unauthenticated,
        ];
        let error = ConnectError::new(codes[code_index], message);
        let decoded = decode_chunked(&[end_stream_frame(Some(&error)).to_vec()]);
        prop_assert_eq!(decoded.frames.len(), 1);
        let frame = &decoded.frames[0];
        prop_assert!(frame.is_end_stream());
        prop_assert_eq!(frame.end_stream_result(), Err(error));
        let ok = decode_chunked(&[end_stream_frame(None).to_vec()]);
        prop_assert_eq!(ok.frames[0].end_stream_result(), Ok(()));
    }

    /// Whatever JSON a peer puts in an end-stream frame, reading it never panics, and an unknown
    /// error code reads as `unknown`, not as a failure to parse.
    #[test]
    fn end_stream_payloads_never_panic(code in ".{0,40}", message in ".{0,40}", junk in ".{0,80}") {
        let json = serde_json::json!({"error": {"code": code, "message": message}});
        let frame = Frame { flags: FLAG_END_STREAM, payload: Bytes::from(json.to_string()) };
        let err = frame.end_stream_result().unwrap_err();
        prop_assert_eq!(err.code, Code::parse(&code).unwrap_or(Code::Unknown));
        prop_assert_eq!(err.message, message);
        let junk = Frame { flags: FLAG_END_STREAM, payload: Bytes::from(junk) };
        let _ = junk.end_stream_result();
        let _ = serde_json::from_slice::<EndStream>(&junk.payload);
    }
}
