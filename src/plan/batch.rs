//! Lazy batches (seed 001): the selected cases, in trial order, are cut into batches of `size`
//! (0 = one batch of everything). The first trial of a batch to run submits the whole batch; the
//! others find their job id waiting. Trials run on several threads, so each batch has its own lock:
//! the first comer submits while the others of that batch wait on the lock, and other batches are
//! not held up.

use std::collections::HashMap;
use std::sync::Mutex;

/// Per case: its job id, or why it could not be submitted.
pub type Submitted = HashMap<String, Result<String, String>>;

pub struct BatchManager {
    size: usize,
    batch_of: HashMap<String, usize>,
    members: Vec<Vec<String>>,
    batches: Vec<Mutex<Option<Submitted>>>,
}

impl BatchManager {
    /// The batch size from `--disagg-batch-size`, else `DISAGG_BATCH_SIZE`, else 5.
    pub fn resolve_size(cli: Option<usize>, env: Option<usize>) -> usize {
        cli.or(env).unwrap_or(5)
    }

    pub fn new(order: Vec<String>, size: usize) -> BatchManager {
        let chunk = if size == 0 { order.len().max(1) } else { size };
        let members: Vec<Vec<String>> = order.chunks(chunk).map(<[String]>::to_vec).collect();
        let batch_of = members
            .iter()
            .enumerate()
            .flat_map(|(b, names)| names.iter().map(move |n| (n.clone(), b)))
            .collect();
        let batches = members.iter().map(|_| Mutex::new(None)).collect();
        BatchManager {
            size,
            batch_of,
            members,
            batches,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn batch_count(&self) -> usize {
        self.members.len()
    }

    pub fn case_count(&self) -> usize {
        self.batch_of.len()
    }

    /// The job id of `case`, submitting its batch first if no trial of the batch has yet.
    /// `submit(batch_index, names)` must return an entry for every name.
    pub fn job_for(
        &self,
        case: &str,
        submit: impl FnOnce(usize, &[String]) -> Submitted,
    ) -> Result<String, String> {
        let &b = self
            .batch_of
            .get(case)
            .ok_or_else(|| format!("{case} is not part of any batch (not selected?)"))?;
        let mut slot = self.batches[b].lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(submit(b, &self.members[b]));
        }
        slot.as_ref()
            .and_then(|s| s.get(case).cloned())
            .unwrap_or_else(|| Err(format!("{case}: its batch was submitted without it")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn sizes_split_in_order_and_zero_means_all() {
        assert_eq!(BatchManager::new(names(12), 5).batch_count(), 3);
        assert_eq!(BatchManager::new(names(12), 0).batch_count(), 1);
        assert_eq!(BatchManager::new(names(12), 1).batch_count(), 12);
        assert_eq!(BatchManager::resolve_size(Some(2), Some(7)), 2);
        assert_eq!(BatchManager::resolve_size(None, Some(7)), 7);
        assert_eq!(BatchManager::resolve_size(None, None), 5);
    }

    #[test]
    fn first_trial_submits_the_whole_batch_once_even_under_contention() {
        let bm = Arc::new(BatchManager::new(names(7), 3));
        let submissions = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..7)
            .rev()
            .map(|i| {
                let (bm, subs) = (bm.clone(), submissions.clone());
                std::thread::spawn(move || {
                    bm.job_for(&format!("c{i}"), |b, members| {
                        subs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        members
                            .iter()
                            .map(|m| (m.clone(), Ok(format!("job-{b}-{m}"))))
                            .collect()
                    })
                })
            })
            .collect();
        let ids: Vec<String> = handles
            .into_iter()
            .map(|h| h.join().unwrap().unwrap())
            .collect();
        assert_eq!(
            submissions.load(Ordering::SeqCst),
            3,
            "one submission per batch"
        );
        assert!(ids.contains(&"job-0-c0".to_owned()) && ids.contains(&"job-2-c6".to_owned()));
    }

    #[test]
    fn a_failed_submission_fails_exactly_that_batch() {
        let bm = BatchManager::new(names(4), 2);
        let fail = |_: usize, m: &[String]| {
            m.iter()
                .map(|n| (n.clone(), Err("sbatch missing".to_owned())))
                .collect()
        };
        assert_eq!(bm.job_for("c0", fail), Err("sbatch missing".to_owned()));
        assert_eq!(
            bm.job_for("c1", |_, _| unreachable!()),
            Err("sbatch missing".to_owned())
        );
        let ok =
            |_: usize, m: &[String]| m.iter().map(|n| (n.clone(), Ok("9".to_owned()))).collect();
        assert_eq!(bm.job_for("c2", ok), Ok("9".to_owned()));
        assert!(bm.job_for("nope", |_, _| unreachable!()).is_err());
    }
}
