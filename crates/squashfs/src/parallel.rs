//! Runs independent jobs on every core, keeping their results in job order.

use crate::error::Stopped;
use anyhow::Result;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// `f(0..count)` on all cores; the first error stops the rest and is returned. `stop()`
/// turning true stops them too (with [`Stopped`]), so nothing is left half-written.
pub fn map<T: Send>(
    count: usize,
    stop_asked: &(dyn Fn() -> bool + Sync),
    f: impl Fn(usize) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(count.max(1));
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let slots: Vec<Mutex<Option<T>>> = (0..count).map(|_| Mutex::new(None)).collect();
    let failure = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let result = if stop_asked() { Err(Stopped.into()) } else { f(i) };
                    match result {
                        Ok(v) => *slots[i].lock().expect("slot lock") = Some(v),
                        Err(e) => {
                            stop.store(true, Ordering::Relaxed);
                            failure.lock().expect("failure lock").get_or_insert(e);
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = failure.into_inner().expect("failure lock") {
        return Err(e);
    }
    Ok(slots
        .into_iter()
        .map(|s| s.into_inner().expect("slot lock").expect("every job ran"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_reports_a_failure() {
        assert_eq!(
            map(100, &|| false, |i| Ok(i * 2)).unwrap(),
            (0..100).map(|i| i * 2).collect::<Vec<_>>()
        );
        let err = map(100, &|| false, |i| {
            if i == 42 { anyhow::bail!("job {i}") } else { Ok(i) }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "job 42");
        assert!(map(0, &|| false, Ok).unwrap().is_empty());
        let stopped = map(10, &|| true, Ok).unwrap_err();
        assert!(stopped.is::<Stopped>());
    }
}
