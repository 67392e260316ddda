//! Reading a parked connection (out of the reactor) without blocking.

use std::pin::Pin;

/// A parked (non-blocking) connection read without the reactor: `Pending` when no byte is
/// there, which only a single poll may see ([`FrameClient::try_next_announcement`]).
pub(super) struct NonBlocking<'a>(pub(super) &'a mut std::os::unix::net::UnixStream);

impl tokio::io::AsyncRead for NonBlocking<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::io::Read as _;
        let this = self.get_mut();
        match this.0.read(buf.initialize_unfilled()) {
            Ok(n) => {
                buf.advance(n);
                std::task::Poll::Ready(Ok(()))
            }
            // Nothing yet (or a signal): looked at again on the next call.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                std::task::Poll::Pending
            }
            Err(e) => std::task::Poll::Ready(Err(e)),
        }
    }
}
