//! The two ways a write ends that are not the writer's fault (loisto-image uses them as its
//! own "bad usage" and "interrupted", exit 2 and 130).

use std::fmt;

/// What was asked cannot be done as written (here: a path too long, an attribute squashfs
/// has no place for, a source that is not a directory): the caller's input is at fault.
#[derive(Debug)]
pub struct InputError(pub String);

impl InputError {
    pub fn new(msg: impl Into<String>) -> Self {
        InputError(msg.into())
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InputError {}

/// Stopped from outside (here: `Options::stop` said so; nothing was left behind).
#[derive(Debug)]
pub struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Stopped {}
