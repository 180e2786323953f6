//! The two ways a write ends that are not the writer's fault.

use std::fmt;

/// The tree cannot be stored as asked (a path too long, an attribute squashfs has no place
/// for, a source that is not a directory): the caller's input is at fault, not the writer.
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

/// The write was stopped from outside (`Options::stop` said so); nothing was left behind.
#[derive(Debug)]
pub struct Stopped;

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Stopped {}
