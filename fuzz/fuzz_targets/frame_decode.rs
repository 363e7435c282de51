//! The protocol's way in: bytes from a socket, split anywhere, through the
//! frame decoder and the verified message decoders. Nothing may panic, no
//! frame may exceed its limit, and every request that decodes must encode
//! back to a message that decodes to the same request.
#![no_main]

use keel_proto::{decode_request, decode_response, encode_request, FrameDecoder, MAX_FRAME_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks where the stream is split.
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let mut frames = FrameDecoder::new();
    let step = usize::from(split).max(1);
    for chunk in stream.chunks(step) {
        frames.extend(chunk);
        loop {
            match frames.next_frame() {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty() && frame.len() <= MAX_FRAME_LEN);
                    if let Ok((id, request)) = decode_request(&frame) {
                        let again = encode_request(id, &request);
                        assert_eq!(decode_request(&again), Ok((id, request)));
                    }
                    let _ = decode_response(&frame);
                }
                Ok(None) => break,
                // The connection would be closed here.
                Err(_) => return,
            }
        }
    }
    // Whole messages too, without framing.
    let _ = decode_request(stream);
    let _ = decode_response(stream);
});
