//! A streamed completion's bytes → the request's text and timings. eventsource-stream parses the
//! event format; in front of it, encoding_rs decodes the bytes the way the SSE standard says (UTF-8,
//! a leading BOM dropped, invalid sequences become U+FFFD, a character split across reads joined).
//! eventsource-stream alone panics on a stream that starts with a BOM (it slices one byte into the
//! three-byte character), after one invalid byte buffers the rest of the stream without ever
//! yielding an event, and drops the last event of a stream whose lines end in CR; all three were
//! found by feeding it generated streams (tests/props.rs).

use std::time::Instant;

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};
use serde_json::Value;

use super::client::{choice_text, usage, ErrorKind, RequestOutput};

/// Decodes a byte stream as UTF-8 text, chunk by chunk, as the SSE standard decodes it.
pub fn decode<S, B, E>(bytes: S) -> impl Stream<Item = Result<String, E>>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    struct State<S> {
        bytes: S,
        /// `None` once the stream has ended.
        decoder: Option<encoding_rs::Decoder>,
        /// The text so far ends with CR.
        after_cr: bool,
    }
    let state = State {
        bytes,
        decoder: Some(encoding_rs::UTF_8.new_decoder_with_bom_removal()),
        after_cr: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            let d = st.decoder.as_mut()?;
            let mut text = String::new();
            match st.bytes.next().await {
                Some(Ok(b)) => {
                    let b = b.as_ref();
                    text.reserve(d.max_utf8_buffer_length(b.len()).unwrap_or(b.len() * 3));
                    let _ = d.decode_to_string(b, &mut text, false);
                }
                Some(Err(e)) => return Some((Err(e), st)),
                None => {
                    // The end: a character cut short becomes U+FFFD. A final CR ends its line
                    // (eventsource-stream would wait for an LF that may follow and drop the last
                    // event), so it gets the LF.
                    text.reserve(8);
                    let _ = d.decode_to_string(&[], &mut text, true);
                    st.decoder = None;
                    if text.ends_with('\r') || (text.is_empty() && st.after_cr) {
                        text.push('\n');
                    }
                    return (!text.is_empty()).then_some((Ok(text), st));
                }
            }
            // A read that only held part of a character yields nothing yet.
            if !text.is_empty() {
                st.after_cr = text.ends_with('\r');
                return Some((Ok(text), st));
            }
        }
    })
}

/// The SSE events of a byte stream.
pub fn events<S, B, E>(bytes: S) -> impl Stream<Item = Result<Event, EventStreamError<E>>>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
{
    Box::pin(decode(bytes)).eventsource()
}

/// Reads a streamed completion into `out`: text, TTFT (first chunk with a choice), ITL (gaps
/// between such chunks) and usage. `start` is when the request was sent; `transport` classifies
/// a read error of the underlying connection. A stream is complete only at `data: [DONE]` after at
/// least one token; the error says why it is not.
pub async fn read_completion<S, B, E>(
    bytes: S,
    start: Instant,
    out: &mut RequestOutput,
    transport: impl Fn(&E) -> ErrorKind,
) -> Result<(), (ErrorKind, String)>
where
    S: Stream<Item = Result<B, E>> + Unpin,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut events = events(bytes);
    let mut first = true;
    let mut last = start;
    let mut done = false;
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| {
            let kind = match &e {
                EventStreamError::Transport(t) => transport(t),
                _ => ErrorKind::MalformedStream,
            };
            (kind, e.to_string())
        })?;
        let data = event.data.trim();
        if data.is_empty() {
            continue;
        }
        if data == "[DONE]" {
            done = true;
            break;
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| (ErrorKind::MalformedStream, format!("bad chunk: {e}")))?;
        if let Some(text) = choice_text(&chunk) {
            let now = Instant::now();
            if first {
                out.ttft = now.duration_since(start).as_secs_f64();
                out.server_ttft = chunk
                    .get("servetest_sim")
                    .and_then(|s| s.get("ttft_us"))
                    .and_then(Value::as_u64)
                    .map(|us| us as f64 / 1e6);
                first = false;
            } else {
                out.itl.push(now.duration_since(last).as_secs_f64());
            }
            last = now;
            out.generated_text.push_str(&text);
        }
        usage(&chunk, out);
    }
    if first {
        return Err((
            ErrorKind::MalformedStream,
            "stream ended without any token".into(),
        ));
    }
    if !done {
        return Err((ErrorKind::Interrupted, "stream ended before [DONE]".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: Vec<Vec<u8>>) -> (Result<(), (ErrorKind, String)>, RequestOutput) {
        let stream =
            futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>));
        let mut out = RequestOutput::default();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = rt.block_on(read_completion(stream, Instant::now(), &mut out, |_| {
            ErrorKind::Other
        }));
        (r, out)
    }

    #[test]
    fn a_leading_bom_is_dropped_not_a_panic() {
        // eventsource-stream by itself panics here (byte index 1 is not a char boundary).
        let mut first = "\u{feff}".as_bytes().to_vec();
        first.extend(b"data: {\"choices\":[{\"text\":\"a\"}]}\n\n");
        let (r, out) = run(vec![first, b"data: [DONE]\n\n".to_vec()]);
        assert_eq!(r, Ok(()));
        assert_eq!(out.generated_text, "a");
    }

    #[test]
    fn a_character_split_across_reads_is_joined() {
        let body = "data: {\"choices\":[{\"text\":\"é世\"}]}\n\ndata: [DONE]\n\n".as_bytes();
        let at = body.iter().position(|&b| b == 0xe4).unwrap() + 1; // inside 世
        let (r, out) = run(vec![body[..at].to_vec(), body[at..].to_vec()]);
        assert_eq!(r, Ok(()));
        assert_eq!(out.generated_text, "é世");
    }

    #[test]
    fn an_invalid_byte_is_replaced_and_the_stream_goes_on() {
        // eventsource-stream by itself never yields another event after the 0xff.
        let (r, out) = run(vec![
            b"data: {\"choices\":[{\"text\":\"a\xff\"}]}\n\n".to_vec(),
            b"data: {\"choices\":[{\"text\":\"b\"}]}\n\ndata: [DONE]\n\n".to_vec(),
        ]);
        assert_eq!(r, Ok(()));
        assert_eq!(out.generated_text, "a\u{fffd}b");
        assert_eq!(out.itl.len(), 1);
    }

    #[test]
    fn lines_ending_in_cr_keep_their_last_event() {
        let body = b"data: {\"choices\":[{\"text\":\"a\"}]}\r\rdata: [DONE]\r\r";
        let (r, out) = run(vec![body.to_vec()]);
        assert_eq!(r, Ok(()));
        assert_eq!(out.generated_text, "a");
        // And with the final CR alone in the last read.
        let (r, _) = run(vec![body[..body.len() - 1].to_vec(), b"\r".to_vec()]);
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn eventsource_stream_alone_panics_on_a_leading_bom() {
        // The other reason for `decode`.
        let chunks: Vec<Result<&[u8], std::convert::Infallible>> =
            vec![Ok("\u{feff}data: x\n\n".as_bytes())];
        let panicked = std::panic::catch_unwind(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(
                futures_util::stream::iter(chunks)
                    .eventsource()
                    .collect::<Vec<_>>(),
            )
        })
        .is_err();
        assert!(panicked, "eventsource-stream no longer panics on a BOM");
    }

    #[test]
    fn eventsource_stream_alone_stalls_after_an_invalid_byte() {
        // The reason for `decode`: keep this test so a fixed eventsource-stream is noticed.
        let chunks: Vec<Result<&[u8], std::convert::Infallible>> = vec![
            Ok(b"data: x\xff\n\n"),
            Ok(b"data: y\n\n"),
            Ok(b"data: z\n\n"),
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let got: Vec<_> = rt.block_on(
            futures_util::stream::iter(chunks)
                .eventsource()
                .collect::<Vec<_>>(),
        );
        assert!(
            got.iter().all(|e| e.is_err()),
            "no event came through: {got:?}"
        );
    }
}
