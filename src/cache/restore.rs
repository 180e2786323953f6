//! Deciding what a whole build takes from the cache, and explaining it (`plan --explain`).

use super::fingerprint::{Fingerprint, explain};
use super::store::{Cache, Entry};
use crate::phase::Phase;

/// What a build will do with the cache: restore the snapshot after phase `restore.0` (the
/// newest one that matches and verifies) and run the rest.
pub struct Decision {
    pub fingerprints: Vec<Fingerprint>,
    pub restore: Option<(usize, Entry)>,
    /// Corrupted entries met on the way (removed when `remove_corrupt`).
    pub notes: Vec<String>,
}

pub fn decide(cache: &Cache, phases: &[Phase], fps: Vec<Fingerprint>, remove_corrupt: bool) -> Decision {
    let mut notes = Vec::new();
    for k in (0..phases.len()).rev().filter(|&k| phases[k].header.snapshot) {
        let Some(e) = cache.find(&phases[k].id, &fps[k]) else {
            continue;
        };
        match cache.verify(&e) {
            Ok(()) => {
                return Decision {
                    fingerprints: fps,
                    restore: Some((k, e)),
                    notes,
                };
            }
            Err(why) => {
                notes.push(format!(
                    "snapshot {} is corrupted ({why}); {}",
                    e.dir.display(),
                    if remove_corrupt {
                        "removed it, not used"
                    } else {
                        "it will not be used"
                    }
                ));
                if remove_corrupt {
                    cache.remove(&e);
                }
            }
        }
    }
    Decision {
        fingerprints: fps,
        restore: None,
        notes,
    }
}

/// One line per phase for `plan --explain`: `restored` or `run`, and why.
pub fn explain_plan(
    cache: &Cache,
    phases: &[Phase],
    d: &Decision,
) -> Vec<(String, &'static str, Vec<String>)> {
    let first_run = d.restore.as_ref().map_or(0, |(k, _)| k + 1);
    phases
        .iter()
        .enumerate()
        .map(|(i, ph)| {
            if i < first_run {
                let (_, e) = d.restore.as_ref().expect("restored phases imply a snapshot");
                let name = e
                    .dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return (ph.id.clone(), "restored", vec![format!("snapshot {name}")]);
            }
            let why = if !ph.header.snapshot {
                vec!["not cached: runs in every build".to_string()]
            } else {
                match cache.newest(&ph.id) {
                    None => vec!["no snapshot yet".to_string()],
                    Some(old) => explain(&old.meta.fingerprint, &d.fingerprints[i]),
                }
            };
            (ph.id.clone(), "run", why)
        })
        .collect()
}
