//! One module per subcommand.

pub mod build;
pub mod bundle;
pub mod chroot;
pub mod clean;
pub mod completions;
pub mod config;
pub mod doctor;
pub mod esp;
pub mod flash_files;
pub mod init;
pub mod keys;
pub mod man;
pub mod plan;
pub mod sign;
pub mod squashfs;
pub mod sysext;
pub mod verify;
pub mod vm;
