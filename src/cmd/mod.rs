//! One module per subcommand.

pub mod build;
pub mod completions;
pub mod config;
pub mod doctor;
pub mod man;
pub mod plan;
pub mod verify;
pub mod vm;
