//! Exit statuses: 0 success, 1 build failure, 2 bad usage or bad config, 130 interrupted.
//!
//! The two errors that are not a build failure are the squashfs writer's own types, so that
//! its refusals and its stops map to the same statuses with nothing to translate:
//! - `UsageError`: the user asked for something that cannot work as written (flags, config,
//!   a tree squashfs cannot hold): exit 2.
//! - `Interrupted`: stopped by SIGINT/SIGTERM: exit 130, like a shell.

pub use loisto_squashfs::error::{InputError as UsageError, Stopped as Interrupted};

pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.chain().any(|e| e.is::<Interrupted>()) {
        130
    } else if err.chain().any(|e| e.is::<UsageError>()) {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_anywhere_in_the_chain_decides() {
        let usage = anyhow::Error::new(UsageError::new("bad flag")).context("parsing");
        assert_eq!(exit_code(&usage), 2);
        let stopped = anyhow::Error::new(Interrupted).context("building");
        assert_eq!(exit_code(&stopped), 130);
        assert_eq!(exit_code(&anyhow::anyhow!("tar failed")), 1);
    }
}
