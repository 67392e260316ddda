//! A floor for capture-svc's CPU per frame with its runtime: a single-thread tokio runtime
//! that reads stdin (a pipe) through the reactor into a 1 MiB buffer and does nothing else,
//! as capture-svc's capture task reads a camera's stdout. Run it behind `bench/pace.py` and
//! measure it like capture-svc (`bench/per-frame.sh` does).

use std::os::fd::{AsFd as _, OwnedFd};

use tokio::io::AsyncReadExt as _;

fn main() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let stdin: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned()?;
        let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(stdin)?;
        let mut buf = vec![0u8; 1 << 20];
        while pipe.read(&mut buf).await? > 0 {}
        Ok(())
    })
}
