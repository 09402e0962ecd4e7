//! What a failed DMI call means: the peer could not be reached, the peer is
//! throttling, or the peer answered and refused this one call.
//!
//! The three call for different reactions, on both sides of DMI:
//!
//! * [`ErrorClass::Transport`]: no answer (connection refused or lost, deadline
//!   passed, call cancelled). The peer may be down or restarting: back off,
//!   reconnect, register again.
//! * [`ErrorClass::Throttled`]: the peer answered "too many requests". Stock
//!   EdgeCore's DMI server rate-limits every call of the node with one token
//!   bucket (`rate.Every(1s)`, burst 100, shared by all mappers) and answers the
//!   excess with a plain Go error, which grpc-go sends as code `Unknown` with
//!   "... too many request ..." in the message (spec §2.1). Keep the registration
//!   and slow down.
//! * [`ErrorClass::Refused`]: the peer answered with any other error. grpc-go
//!   turns every plain Go error into `Unknown`, so `Unknown` alone says nothing
//!   about reachability: a Go mapper refusing one `UpdateDevice` is healthy and
//!   must keep getting the other devices.

use tonic::{Code, Status};

/// The kind of a failed call; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The peer was not reached or did not answer.
    Transport,
    /// The peer answered that it is rate-limiting.
    Throttled,
    /// The peer answered and refused this call.
    Refused,
}

/// Classifies a failed call.
///
/// `Unavailable`, `DeadlineExceeded` and `Cancelled` are transport failures, and
/// so is any status tonic made up locally from a transport error (it carries
/// that error as its `source`; a status the peer sent never does).
/// `ResourceExhausted`, and any answer whose message says "too many request"
/// (stock EdgeCore's limiter), are throttling. Everything else is a refusal.
pub fn classify(status: &Status) -> ErrorClass {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => ErrorClass::Transport,
        _ if std::error::Error::source(status).is_some() => ErrorClass::Transport,
        Code::ResourceExhausted => ErrorClass::Throttled,
        _ if is_throttle_message(status.message()) => ErrorClass::Throttled,
        _ => ErrorClass::Refused,
    }
}

fn is_throttle_message(m: &str) -> bool {
    let m = m.to_ascii_lowercase();
    m.contains("too many request") || m.contains("rate limit")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(
            classify(&Status::unavailable("connection refused")),
            ErrorClass::Transport
        );
        assert_eq!(
            classify(&Status::deadline_exceeded("timeout")),
            ErrorClass::Transport
        );
        // What stock EdgeCore's limiter answers (a plain Go error → Unknown).
        assert_eq!(
            classify(&Status::unknown(
                "fail to report device status because of too many request: default/d1"
            )),
            ErrorClass::Throttled
        );
        assert_eq!(
            classify(&Status::resource_exhausted("slow down")),
            ErrorClass::Throttled
        );
        // A Go mapper refusing one device: Unknown, but answered.
        assert_eq!(
            classify(&Status::unknown("add device d1 failed: bad visitor")),
            ErrorClass::Refused
        );
        assert_eq!(
            classify(&Status::invalid_argument("bad twin")),
            ErrorClass::Refused
        );
        // Made up locally from a transport error: carries its source.
        let local = Status::from_error(Box::new(std::io::Error::other("broken pipe")));
        assert_eq!(classify(&local), ErrorClass::Transport);
    }
}
