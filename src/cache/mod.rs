//! The phase cache. Rootfs snapshots after the expensive phases, keyed by a fingerprint of
//! everything the phases up to them read; a rebuild restores the newest valid snapshot and
//! runs only what follows. Every entry is checksummed and verified before it is used.
//!
//! Inside, each module uses only those listed before it:
//! - `tar`: the tar invocation snapshots and hot sets are made with;
//! - `fingerprint`: what a phase depends on, and why it changed (`plan --explain`);
//! - `resync`: undoing a phase's changes in place instead of extracting a whole snapshot;
//! - `store`: the snapshot directories (store, find, verify, restore, prune);
//! - `restore`: which snapshot a build restores, and what it runs after it.

pub mod fingerprint;
pub mod restore;
pub mod resync;
pub mod store;
pub mod tar;

pub use fingerprint::{Fingerprint, explain, fingerprints};
pub use store::{Cache, Entry, Meta, Restored};
