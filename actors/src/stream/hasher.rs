//! The whole-image SHA-256, on its own thread: SHA-256 is sequential, so it runs beside the
//! compressors (which hash each chunk in parallel) and never on the async runtime.
//!
//! After each item it records the hash state at that image offset, so a part's journal can
//! carry the state at the part's end and a resumed export continues the hash from there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, Notify};

use super::StreamError;

/// What the hasher is fed, in image order.
pub(crate) enum HashItem {
    /// Data bytes.
    Data(Arc<Vec<u8>>),
    /// Zero bytes.
    Zero(u64),
}

/// Hash states by image offset, and a wake-up for whoever waits for one.
type States = Arc<(Mutex<BTreeMap<u64, Vec<u8>>>, Notify)>;

/// The running hasher.
pub(crate) struct ImageHasher {
    tx: Option<mpsc::Sender<HashItem>>,
    states: States,
    thread: Option<std::thread::JoinHandle<[u8; 32]>>,
}

impl ImageHasher {
    /// Starts at image `offset`, continuing `state` (from a journal) when resuming.
    pub(crate) fn start(offset: u64, state: Option<&[u8]>, capacity: usize) -> Result<ImageHasher, StreamError> {
        let mut hash = match state {
            None => Sha256::new(),
            Some(s) => {
                let arr =
                    s.try_into().map_err(|_| StreamError::Corrupt("journal hash state has the wrong size".into()))?;
                Sha256::deserialize(arr).map_err(|_| StreamError::Corrupt("journal hash state is invalid".into()))?
            }
        };
        let (tx, mut rx) = mpsc::channel::<HashItem>(capacity);
        let states: States = Arc::default();
        let shared = states.clone();
        let thread = std::thread::Builder::new()
            .name("bunker-sha256".into())
            .spawn(move || {
                let zeros = vec![0u8; 1 << 20];
                let mut at = offset;
                while let Some(item) = rx.blocking_recv() {
                    match item {
                        HashItem::Data(b) => {
                            hash.update(&b[..]);
                            at += b.len() as u64;
                        }
                        HashItem::Zero(mut n) => {
                            at += n;
                            while n > 0 {
                                let k = n.min(zeros.len() as u64) as usize;
                                hash.update(&zeros[..k]);
                                n -= k as u64;
                            }
                        }
                    }
                    shared.0.lock().expect("hash states").insert(at, hash.serialize().to_vec());
                    shared.1.notify_waiters();
                }
                hash.finalize().into()
            })
            .map_err(|e| StreamError::Internal(format!("cannot start the hash thread: {e}")))?;
        Ok(ImageHasher { tx: Some(tx), states, thread: Some(thread) })
    }

    /// Feeds the next item (waits when the hasher is behind: back-pressure).
    pub(crate) async fn feed(&self, item: HashItem) -> Result<(), StreamError> {
        let tx = self.tx.as_ref().expect("fed after finish");
        tx.send(item).await.map_err(|_| StreamError::Internal("hash thread stopped".into()))
    }

    /// The state once the hash has consumed the image up to `offset`; forgets earlier states.
    pub(crate) async fn state_at(&self, offset: u64) -> Result<Vec<u8>, StreamError> {
        loop {
            let notified = self.states.1.notified();
            {
                let mut map = self.states.0.lock().expect("hash states");
                if let Some(s) = map.get(&offset).cloned() {
                    *map = map.split_off(&offset);
                    return Ok(s);
                }
                if map.keys().next_back().is_some_and(|&k| k > offset) {
                    return Err(StreamError::Internal(format!("no hash state at offset {offset}")));
                }
            }
            if self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return Err(StreamError::Internal("hash thread stopped".into()));
            }
            notified.await;
        }
    }

    /// Ends the input and returns the digest.
    pub(crate) async fn finish(mut self) -> Result<[u8; 32], StreamError> {
        self.tx.take();
        let thread = self.thread.take().expect("finished once");
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| StreamError::Internal(e.to_string()))?
            .map_err(|_| StreamError::Internal("hash thread panicked".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resumed_state_gives_the_same_digest() {
        let a = Arc::new(vec![7u8; 100_000]);
        let h = ImageHasher::start(0, None, 2).unwrap();
        h.feed(HashItem::Data(a.clone())).await.unwrap();
        let state = h.state_at(100_000).await.unwrap();
        h.feed(HashItem::Zero(5_000)).await.unwrap();
        let whole = h.finish().await.unwrap();

        let h2 = ImageHasher::start(100_000, Some(&state), 2).unwrap();
        h2.feed(HashItem::Zero(5_000)).await.unwrap();
        assert_eq!(h2.finish().await.unwrap(), whole);
        let mut plain = vec![7u8; 100_000];
        plain.extend(vec![0u8; 5_000]);
        assert_eq!(whole, super::super::sha256(&plain));
    }
}
