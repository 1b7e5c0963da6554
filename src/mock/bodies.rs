//! Broken success bodies: malformed, missing fields, truncated, reset, huge and slow.
//!
//! actix-web cannot close a socket from a handler, so the connection-level faults use
//! the h1 dispatcher's own error paths:
//! - reset: a streaming body whose first poll fails. The dispatcher drops the connection
//!   before the buffered status line is flushed, so the client sees the connection
//!   close with no answer at all (a FIN, not a TCP RST).
//! - truncate: a sized body that sends half its declared length, pauses so the
//!   dispatcher flushes that half, then ends early; the dispatcher's length check then
//!   fails and the connection is dropped mid-body.

use std::io;
use std::time::Duration;

use actix_web::body::SizedStream;
use actix_web::{HttpResponse, HttpResponseBuilder};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream;
use serde_json::Value;

use super::directives::BodyFault;

/// Size of the padding `huge` adds to the answer text.
pub(crate) const HUGE_PADDING: usize = 12 * 1024 * 1024;
/// Pieces a slow body is sent in.
const SLOW_PIECES: u32 = 10;
/// Long enough for the dispatcher to flush what a truncated body sent before it fails.
const FLUSH_PAUSE: Duration = Duration::from_millis(50);

/// The answer text padded to make a 12 MiB body.
pub(crate) fn huge_text(text: &str) -> String {
    let mut huge = String::with_capacity(text.len() + 1 + HUGE_PADDING);
    huge.push_str(text);
    huge.push(' ');
    huge.extend(std::iter::repeat_n('x', HUGE_PADDING));
    huge
}

/// The success `body` broken as `fault` says; `ok` carries status and headers.
pub(crate) fn faulty(
    fault: BodyFault,
    mut ok: HttpResponseBuilder,
    mut body: Value,
    strip_text: fn(&mut Value),
) -> HttpResponse {
    match fault {
        BodyFault::Malformed => {
            // Half a JSON object never parses: its braces cannot balance.
            let full = Bytes::from(body.to_string());
            ok.body(full.slice(..full.len() / 2))
        }
        BodyFault::MissingFields => {
            strip_text(&mut body);
            ok.body(body.to_string())
        }
        BodyFault::Truncate => truncated(ok, Bytes::from(body.to_string())),
        BodyFault::Reset => reset(),
        BodyFault::Huge => ok.body(body.to_string()),
        BodyFault::SlowBody(over) => slow(ok, Bytes::from(body.to_string()), over),
    }
}

/// Closes the connection without sending a byte.
pub(crate) fn reset() -> HttpResponse {
    let failing = stream::once(async {
        Err::<Bytes, io::Error>(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "injected reset",
        ))
    });
    HttpResponse::Ok().streaming(failing)
}

fn truncated(mut ok: HttpResponseBuilder, full: Bytes) -> HttpResponse {
    let declared = u64::try_from(full.len()).unwrap_or(u64::MAX);
    let sent = full.slice(..full.len() / 2);
    let body = stream::unfold(Some(sent), |pending| async move {
        match pending {
            Some(chunk) => Some((Ok::<Bytes, io::Error>(chunk), None)),
            None => {
                actix_web::rt::time::sleep(FLUSH_PAUSE).await;
                None
            }
        }
    });
    ok.body(SizedStream::new(declared, body))
}

fn slow(mut ok: HttpResponseBuilder, full: Bytes, over: Duration) -> HttpResponse {
    let declared = u64::try_from(full.len()).unwrap_or(u64::MAX);
    let piece = full.len().div_ceil(SLOW_PIECES as usize).max(1);
    let pieces: Vec<Bytes> = (0..full.len())
        .step_by(piece)
        .map(|start| full.slice(start..(start + piece).min(full.len())))
        .collect();
    let pause = over / SLOW_PIECES;
    // The first pause lets the dispatcher flush the headers before any body byte.
    let body = stream::iter(pieces).then(move |chunk| async move {
        actix_web::rt::time::sleep(pause).await;
        Ok::<Bytes, io::Error>(chunk)
    });
    ok.body(SizedStream::new(declared, body))
}
