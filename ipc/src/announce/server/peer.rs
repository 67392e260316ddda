//! Who is at the other end of an announce connection, as the kernel says, and whether it may
//! hold a reserved place.

use tokio::net::UnixStream;

/// Who is at the other end, as the kernel says (`SO_PEERCRED`), unlike the name it gives.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peer {
    pub(super) uid: Option<u32>,
    pub(super) gid: Option<u32>,
    pub(super) pid: Option<i32>,
}

impl Peer {
    pub(super) fn of(stream: &UnixStream) -> Peer {
        match stream.peer_cred() {
            Ok(cred) => Peer {
                uid: Some(cred.uid()),
                gid: Some(cred.gid()),
                pid: cred.pid(),
            },
            Err(_) => Peer {
                uid: None,
                gid: None,
                pid: None,
            },
        }
    }

    /// Whether this peer may hold a reserved place: it runs as root, as the server's user, or
    /// with the server's group as its own (the consumers' units: `Group=mecam`, like
    /// capture-svc's). Another user who is merely a member of the socket's group can connect,
    /// but only to the shared pool, so it cannot take a consumer's place.
    pub(super) fn may_reserve(&self, server: Ids) -> bool {
        self.uid == Some(0) || self.uid == Some(server.uid) || self.gid == Some(server.gid)
    }
}

/// The server's own effective uid and gid.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ids {
    pub(super) uid: u32,
    pub(super) gid: u32,
}

impl Ids {
    pub(super) fn own() -> Ids {
        Ids {
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.uid {
            Some(uid) => write!(f, "uid {uid}")?,
            None => f.write_str("uid unknown")?,
        }
        match self.pid {
            Some(pid) => write!(f, " pid {pid}"),
            None => f.write_str(" pid unknown"),
        }
    }
}
