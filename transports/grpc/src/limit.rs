//! The request size limit, checked on the way in: each gRPC message's length prefix is read
//! as its bytes arrive, and a message over the limit fails the request body with
//! `RESOURCE_EXHAUSTED` (reason `MESSAGE_TOO_LARGE`, with details) before its bytes are
//! buffered. tonic finds that status in the body's error and answers with it; its own check
//! (the same limit, `OUT_OF_RANGE` without details) is never reached.

use crate::status::message_too_large;
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tonic::Status;
use tonic::server::NamedService;

/// The largest request message the server takes: 8 MiB.
pub const MAX_REQUEST_MESSAGE_BYTES: usize = 8 << 20;

/// The length prefix of a gRPC message: a compression flag and a big-endian `u32`.
const HEADER: usize = 5;

/// A gRPC service whose request bodies are checked by [`LimitedBody`].
#[derive(Debug, Clone)]
pub struct LimitedServer<S> {
    inner: S,
    limit: usize,
}

impl<S> LimitedServer<S> {
    /// `inner`, refusing request messages over `limit` bytes.
    pub fn new(inner: S, limit: usize) -> Self {
        LimitedServer { inner, limit }
    }
}

impl<S: NamedService> NamedService for LimitedServer<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower_service::Service<http::Request<B>> for LimitedServer<S>
where
    S: tower_service::Service<http::Request<LimitedBody<B>>>,
    B: Body + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let limit = self.limit;
        self.inner.call(req.map(|b| LimitedBody::new(b, limit)))
    }
}

/// A request body that fails with [`message_too_large`] when a gRPC message's length prefix
/// says more than the limit (the messages before it are passed on first). Other errors of the
/// body are passed on as tonic maps them.
pub struct LimitedBody<B> {
    inner: Pin<Box<B>>,
    framing: Framing,
    /// The refusal to give at the next poll, once the bytes before it went out.
    refusal: Option<Status>,
    failed: bool,
}

impl<B> LimitedBody<B> {
    fn new(inner: B, limit: usize) -> Self {
        LimitedBody {
            inner: Box::pin(inner),
            framing: Framing::new(limit),
            refusal: None,
            failed: false,
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = self.get_mut();
        if let Some(refusal) = this.refusal.take() {
            this.failed = true;
            return Poll::Ready(Some(Err(refusal)));
        }
        if this.failed {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Status::from_error(e.into())))),
            Poll::Ready(Some(Ok(frame))) => {
                let mut frame = frame.map_data(|mut d| d.copy_to_bytes(d.remaining()));
                if let Some(data) = frame.data_mut()
                    && let Err(TooLarge { size, at }) = this.framing.scan(data)
                {
                    let refusal = message_too_large(size, this.framing.limit);
                    if at == 0 {
                        this.failed = true;
                        return Poll::Ready(Some(Err(refusal)));
                    }
                    // The whole messages before the prefix go to tonic first.
                    data.truncate(at);
                    this.refusal = Some(refusal);
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.refusal.is_none() && (self.failed || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A length prefix over the limit: the size it announces and where it starts in the chunk
/// scanned (0 when it started in an earlier one).
#[derive(Debug, PartialEq, Eq)]
struct TooLarge {
    size: usize,
    at: usize,
}

/// Where the body is in its sequence of length-prefixed messages.
#[derive(Debug)]
struct Framing {
    limit: usize,
    /// The length prefix being read and how much of it has come.
    header: [u8; HEADER],
    have: usize,
    /// Bytes of the current message still to come (0: a prefix is next).
    body_left: usize,
}

impl Framing {
    fn new(limit: usize) -> Self {
        Framing {
            limit,
            header: [0; HEADER],
            have: 0,
            body_left: 0,
        }
    }

    /// Follows `data`; an error at a prefix announcing a message over the limit.
    fn scan(&mut self, data: &[u8]) -> Result<(), TooLarge> {
        let mut pos = 0;
        while pos < data.len() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len() - pos);
                self.body_left -= n;
                pos += n;
                continue;
            }
            // Where this prefix starts in `data` (0: it began in an earlier chunk).
            let start = if self.have == 0 { pos } else { 0 };
            let n = (HEADER - self.have).min(data.len() - pos);
            self.header[self.have..self.have + n].copy_from_slice(&data[pos..pos + n]);
            self.have += n;
            pos += n;
            if self.have == HEADER {
                self.have = 0;
                let [_, a, b, c, d] = self.header;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > self.limit {
                    return Err(TooLarge {
                        size: len,
                        at: start,
                    });
                }
                self.body_left = len;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(len: u32) -> Vec<u8> {
        let mut v = vec![0];
        v.extend(len.to_be_bytes());
        v
    }

    #[test]
    fn messages_at_the_limit_pass_and_one_over_is_caught_at_its_prefix() {
        let mut f = Framing::new(4);
        let mut bytes = prefix(4);
        bytes.extend([1, 2, 3, 4]);
        bytes.extend(prefix(0));
        bytes.extend(prefix(2));
        bytes.extend([9, 9]);
        assert_eq!(f.scan(&bytes), Ok(()));
        assert_eq!(f.scan(&prefix(5)), Err(TooLarge { size: 5, at: 0 }));
    }

    #[test]
    fn the_refused_prefix_is_located_after_the_messages_before_it() {
        let mut f = Framing::new(4);
        let mut bytes = prefix(2);
        bytes.extend([1, 2]);
        bytes.extend(prefix(9));
        assert_eq!(f.scan(&bytes), Err(TooLarge { size: 9, at: 7 }));
    }

    #[test]
    fn a_prefix_split_across_chunks_is_still_read() {
        let mut f = Framing::new(10);
        let mut bytes = prefix(3);
        bytes.extend([1, 2, 3]);
        bytes.extend(prefix(11));
        // One byte at a time: the second prefix completes on its last byte.
        let (last, rest) = bytes.split_last().expect("bytes");
        for b in rest {
            assert_eq!(f.scan(std::slice::from_ref(b)), Ok(()));
        }
        assert_eq!(f.scan(&[*last]), Err(TooLarge { size: 11, at: 0 }));
    }
}
