//! Exit statuses: 0 success, 1 build failure, 2 bad usage or bad config, 130 interrupted.

use std::fmt;

/// The user asked for something that cannot work as written (flags, config): exit 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl UsageError {
    pub fn new(msg: impl Into<String>) -> Self {
        UsageError(msg.into())
    }
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The build was stopped by SIGINT/SIGTERM: exit 130, like a shell.
#[derive(Debug)]
pub struct Interrupted;

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

pub fn exit_code(err: &anyhow::Error) -> i32 {
    use loisto_squashfs::error::{InputError, Stopped};
    if err.chain().any(|e| e.is::<Interrupted>() || e.is::<Stopped>()) {
        130
    } else if err.chain().any(|e| e.is::<UsageError>() || e.is::<InputError>()) {
        2
    } else {
        1
    }
}
