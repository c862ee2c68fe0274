//! A whole-image hash on its own thread, beside the pipeline and never on the async runtime:
//! SHA-256 for exports asked for it (`--sha256`) and for reading format-1 archives, plain
//! BLAKE3 for checking a format-2 archive's image hash while reading it.
//!
//! SHA-256 records its state after each item at that image offset, so a part's journal can
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

/// The hash being computed.
enum Running {
    Sha256(Sha256),
    Blake3(Box<blake3::Hasher>),
}

impl Running {
    fn update(&mut self, data: &[u8]) {
        match self {
            Running::Sha256(h) => h.update(data),
            Running::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The resumable state (SHA-256 only: exports never resume a BLAKE3 stream).
    fn state(&self) -> Option<Vec<u8>> {
        match self {
            Running::Sha256(h) => Some(h.serialize().to_vec()),
            Running::Blake3(_) => None,
        }
    }

    fn finish(self) -> [u8; 32] {
        match self {
            Running::Sha256(h) => h.finalize().into(),
            Running::Blake3(h) => h.finalize().into(),
        }
    }
}

/// The running hasher.
pub(crate) struct ImageHasher {
    tx: Option<mpsc::Sender<HashItem>>,
    states: States,
    thread: Option<std::thread::JoinHandle<[u8; 32]>>,
}

impl ImageHasher {
    /// A SHA-256 starting at image `offset`, continuing `state` (from a journal) when resuming.
    pub(crate) fn start(offset: u64, state: Option<&[u8]>, capacity: usize) -> Result<ImageHasher, StreamError> {
        let hash = match state {
            None => Sha256::new(),
            Some(s) => {
                let arr =
                    s.try_into().map_err(|_| StreamError::Corrupt("journal hash state has the wrong size".into()))?;
                Sha256::deserialize(arr).map_err(|_| StreamError::Corrupt("journal hash state is invalid".into()))?
            }
        };
        ImageHasher::spawn(Running::Sha256(hash), offset, capacity)
    }

    /// A plain BLAKE3 of the whole image, from its start.
    pub(crate) fn blake3(capacity: usize) -> Result<ImageHasher, StreamError> {
        ImageHasher::spawn(Running::Blake3(Box::default()), 0, capacity)
    }

    fn spawn(mut hash: Running, offset: u64, capacity: usize) -> Result<ImageHasher, StreamError> {
        let (tx, mut rx) = mpsc::channel::<HashItem>(capacity);
        let states: States = Arc::default();
        let shared = states.clone();
        let thread = std::thread::Builder::new()
            .name("bunker-image-hash".into())
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
                    if let Some(state) = hash.state() {
                        shared.0.lock().expect("hash states").insert(at, state);
                        shared.1.notify_waiters();
                    }
                }
                hash.finish()
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

        let b = ImageHasher::blake3(2).unwrap();
        b.feed(HashItem::Data(a)).await.unwrap();
        b.feed(HashItem::Zero(5_000)).await.unwrap();
        assert_eq!(b.finish().await.unwrap(), *blake3::hash(&plain).as_bytes());
    }
}
