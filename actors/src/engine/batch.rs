//! Batched observation: the looks at AWS that many jobs make at about the same time, made as
//! one request per group (a kind and region) instead of one per job.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use crate::ports::{ErrorKind, PortError};

/// Loads the answers for many keys of one group at once; a key without an answer is absent.
pub type Load<G, K, V> = Arc<dyn Fn(G, Vec<K>) -> BoxFuture<'static, Result<HashMap<K, V>, PortError>> + Send + Sync>;

type Waiter<V> = oneshot::Sender<Result<Option<V>, PortError>>;

struct Group<K, V> {
    pending: Vec<(K, Waiter<V>)>,
    loading: bool,
}

/// Gathers the keys jobs ask about, per group, and answers them with one [`Load`]: the first
/// question starts a load (after the gathering window, if any, with every question asked
/// meanwhile); the questions asked while a load runs wait and are loaded together as soon as
/// it ends. So every answer comes from a load that started after
/// the question was asked — a job never reads a state older than its own last effect — and
/// while AWS is slow to answer, more jobs share each answer. A job asking alone still gets
/// its answer (a batch of one).
pub struct Batcher<G, K, V> {
    load: Load<G, K, V>,
    groups: Arc<Mutex<HashMap<G, Group<K, V>>>>,
    window: Duration,
}

impl<G, K, V> Batcher<G, K, V>
where
    G: Clone + Eq + Hash + Send + 'static,
    K: Clone + Eq + Hash + Send + 'static,
    V: Clone + Send + 'static,
{
    /// A batcher over `load` that starts each load as soon as it is asked for.
    pub fn new(load: Load<G, K, V>) -> Self {
        Batcher { load, groups: Arc::default(), window: Duration::ZERO }
    }

    /// Each load waits `window` after the question that starts it, gathering the questions
    /// asked meanwhile (jobs whose passes end a few milliseconds apart share one look).
    pub fn gathering(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The answer for `key` of `group` (`None`: the load found nothing for it).
    pub async fn get(&self, group: G, key: K) -> Result<Option<V>, PortError> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut groups = self.groups.lock().expect("batch lock");
            let g = groups.entry(group.clone()).or_insert_with(|| Group { pending: vec![], loading: false });
            g.pending.push((key, tx));
            !std::mem::replace(&mut g.loading, true)
        };
        if lead {
            // A task of its own: a requester that gives up does not stop the others' load.
            tokio::spawn(drain(self.load.clone(), self.groups.clone(), group, self.window));
        }
        rx.await.unwrap_or_else(|_| Err(PortError::new(ErrorKind::Transient, None, "the batched look was lost")))
    }
}

/// Loads `group`'s pending keys, batch after batch, until none are left.
async fn drain<G, K, V>(load: Load<G, K, V>, groups: Arc<Mutex<HashMap<G, Group<K, V>>>>, group: G, window: Duration)
where
    G: Clone + Eq + Hash + Send + 'static,
    K: Clone + Eq + Hash + Send + 'static,
    V: Clone + Send + 'static,
{
    // A load that panics ends this task: the group is reset on the way out, so its waiters
    // hear "lost" (and retry) and the next question starts a new leader instead of waiting
    // for this one forever.
    let mut reset = Reset { groups: groups.clone(), group: group.clone(), armed: true };
    loop {
        if !window.is_zero() {
            tokio::time::sleep(window).await;
        }
        let batch = {
            let mut all = groups.lock().expect("batch lock");
            let Some(g) = all.get_mut(&group) else {
                reset.armed = false;
                return;
            };
            if g.pending.is_empty() {
                // Under the lock: a question asked from now on finds no group and leads.
                all.remove(&group);
                reset.armed = false;
                return;
            }
            std::mem::take(&mut g.pending)
        };
        let mut keys: Vec<K> = Vec::with_capacity(batch.len());
        for (k, _) in &batch {
            if !keys.contains(k) {
                keys.push(k.clone());
            }
        }
        let answer = load(group.clone(), keys).await;
        for (k, tx) in batch {
            // A requester that went away needs no answer.
            drop(tx.send(answer.as_ref().map(|m| m.get(&k).cloned()).map_err(Clone::clone)));
        }
    }
}

/// Removes a group's state when its drain task dies in a load (a panic); disarmed when the
/// task ends normally, having removed the group itself under the lock.
struct Reset<G: Eq + Hash, K, V> {
    groups: Arc<Mutex<HashMap<G, Group<K, V>>>>,
    group: G,
    armed: bool,
}

impl<G: Eq + Hash, K, V> Drop for Reset<G, K, V> {
    fn drop(&mut self) {
        if self.armed {
            // Poisoned or not, the map is consistent: no lock is held across a load.
            let mut all = self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            all.remove(&self.group);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn questions_asked_during_a_load_share_the_next_one() {
        let loads = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let seen = loads.clone();
        let load: Load<&'static str, u32, u32> = Arc::new(move |_g, keys: Vec<u32>| {
            seen.lock().unwrap().push(keys.clone());
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Ok(keys.into_iter().filter(|k| k % 2 == 0).map(|k| (k, k * 10)).collect())
            })
        });
        let b = Arc::new(Batcher::new(load));
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.get("r", 0).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let rest: Vec<_> = (1..=50)
            .map(|k| {
                let b = b.clone();
                tokio::spawn(async move { b.get("r", k % 25).await })
            })
            .collect();
        assert_eq!(first.await.unwrap().unwrap(), Some(0));
        for (k, h) in (1..=50).zip(rest) {
            let k = k % 25;
            assert_eq!(h.await.unwrap().unwrap(), (k % 2 == 0).then_some(k * 10), "key {k}");
        }
        let loads = loads.lock().unwrap();
        assert_eq!(loads.len(), 2, "one load for the first question, one for the 50 asked meanwhile: {loads:?}");
        assert_eq!(loads[1].len(), 25, "each key loaded once per batch");
        assert!(b.groups.lock().unwrap().is_empty(), "nothing left behind");
    }

    #[tokio::test]
    async fn a_panicking_load_loses_its_batch_and_the_next_question_loads_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let n = calls.clone();
        let load: Load<u8, u8, u8> = Arc::new(move |_g, keys: Vec<u8>| {
            let first = n.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                assert!(!first, "a bug in the first load");
                Ok(keys.into_iter().map(|k| (k, k)).collect())
            })
        });
        let b = Batcher::new(load);
        assert_eq!(b.get(1, 7).await.unwrap_err().kind, ErrorKind::Transient, "lost, to be retried");
        assert_eq!(b.get(1, 7).await.unwrap(), Some(7), "not stuck behind the dead leader");
    }

    #[tokio::test]
    async fn a_failed_load_fails_its_batch_and_the_next_question_loads_again() {
        let calls = Arc::new(AtomicUsize::new(0));
        let n = calls.clone();
        let load: Load<u8, u8, u8> = Arc::new(move |_g, keys: Vec<u8>| {
            let first = n.fetch_add(1, Ordering::SeqCst) == 0;
            Box::pin(async move {
                match first {
                    true => Err(PortError::new(ErrorKind::Throttled, None, "slow down")),
                    false => Ok(keys.into_iter().map(|k| (k, k)).collect()),
                }
            })
        });
        let b = Batcher::new(load);
        assert_eq!(b.get(1, 7).await.unwrap_err().kind, ErrorKind::Throttled);
        assert_eq!(b.get(1, 7).await.unwrap(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
