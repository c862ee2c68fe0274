//! BLAKE3 for format version 2: each chunk's chaining value at its image offset (a subtree
//! of the whole image's BLAKE3 tree), and [`ImageTree`], which merges those values, in image
//! order, into the whole image's BLAKE3 — the hash `b3sum` prints — without reading a byte
//! twice. The chunk size is a power of two, so every chunk but the last is a complete subtree
//! and the merge follows BLAKE3's own left-balanced tree (the `hazmat` module's rules).

use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};
use serde::{Deserialize, Serialize};

/// 64 KiB of zeros, hashed repeatedly for zero runs.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// The BLAKE3 chaining value of `data`, a non-empty subtree starting at image byte `offset`
/// (a multiple of the chunk size, itself a power of two).
pub fn chaining_value(offset: u64, data: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(data);
    h.finalize_non_root()
}

/// The chaining values of a zero run at `offset`, one per `chunk_size` piece.
pub fn zero_chaining_values(offset: u64, length: u64, chunk_size: u64) -> Vec<[u8; 32]> {
    let mut out = Vec::with_capacity(length.div_ceil(chunk_size) as usize);
    let mut at = offset;
    while at < offset + length {
        let n = (offset + length - at).min(chunk_size);
        let mut h = blake3::Hasher::new();
        h.set_input_offset(at);
        feed_zeros(&mut h, n);
        out.push(h.finalize_non_root());
        at += n;
    }
    out
}

/// The plain BLAKE3 of `length` zero bytes: a zero piece's entry in the chunk list (the same
/// at every offset), and the whole image's hash when a zero piece is all of it.
pub fn zero_hash(length: u64) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    feed_zeros(&mut h, length);
    h.finalize().into()
}

fn feed_zeros(h: &mut blake3::Hasher, mut n: u64) {
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        h.update(&ZEROS[..k]);
        n -= k as u64;
    }
}

/// The whole image's BLAKE3, merged from its pieces' chaining values in order. As in
/// BLAKE3's reference implementation, a piece joins the stack of complete subtrees only once
/// the next one arrives (the last piece's parent chain must end in a root node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageTree {
    /// Pieces pushed.
    pieces: u64,
    /// Complete subtrees, largest (leftmost) first, as hex.
    stack: Vec<String>,
    /// The newest piece's chaining value (hex), not yet on the stack.
    pending: Option<String>,
    /// The plain BLAKE3 of the first piece (hex): the image's hash if it is the only one.
    first: Option<String>,
}

impl ImageTree {
    /// Adds the next piece: its chaining value and, for the first piece, its plain hash.
    pub fn push(&mut self, cv: [u8; 32], first_plain: Option<[u8; 32]>) {
        if self.pieces == 0 {
            self.first = first_plain.map(|h| hex(&h));
        }
        if let Some(prev) = self.pending.take() {
            let mut cv = unhex(&prev);
            let mut total = self.pieces;
            while total & 1 == 0 {
                let left = unhex(&self.stack.pop().expect("the stack holds one subtree per set bit"));
                cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
                total >>= 1;
            }
            self.stack.push(hex(&cv));
        }
        self.pending = Some(hex(&cv));
        self.pieces += 1;
    }

    /// The whole image's BLAKE3; `None` when a one-piece image lacks its plain hash (a
    /// journal written without it).
    pub fn finish(&self) -> Option<[u8; 32]> {
        let Some(pending) = &self.pending else { return Some(blake3::hash(b"").into()) };
        if self.stack.is_empty() {
            return self.first.as_deref().map(unhex);
        }
        let mut cv = unhex(pending);
        for (i, left) in self.stack.iter().enumerate().rev() {
            let left = unhex(left);
            if i == 0 {
                return Some(*merge_subtrees_root(&left, &cv, Mode::Hash).as_bytes());
            }
            cv = merge_subtrees_non_root(&left, &cv, Mode::Hash);
        }
        unreachable!("the loop returns at the stack's bottom")
    }

    /// Pieces merged so far.
    pub fn pieces(&self) -> u64 {
        self.pieces
    }

    /// Whether a deserialized tree is well formed (a journal is input).
    pub fn is_valid(&self) -> bool {
        let ok = |h: &String| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
        let merged = self.pieces.saturating_sub(1);
        self.stack.iter().all(ok)
            && self.pending.iter().chain(&self.first).all(ok)
            && self.stack.len() == merged.count_ones() as usize
            && self.pending.is_some() == (self.pieces > 0)
    }
}

fn hex(b: &[u8; 32]) -> String {
    bunker_protocol::archive::hex(b)
}

fn unhex(s: &str) -> [u8; 32] {
    super::export::unhex(s).and_then(|v| v.try_into().ok()).expect("tree hashes are checked hex")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree over pieces of `chunk` bytes gives `blake3::hash` of the whole input, for
    /// every piece count around the powers of two and a short last piece, and survives a
    /// serialization round trip part-way.
    #[test]
    fn merged_pieces_equal_the_plain_hash() {
        let chunk = 2048usize;
        let data: Vec<u8> = (0..chunk * 9 + 700).map(|i| (i * 31 % 251) as u8).collect();
        for len in [1, 1024, chunk, chunk + 1, 2 * chunk, 3 * chunk - 5, 4 * chunk, 5 * chunk, 8 * chunk, data.len()] {
            let input = &data[..len];
            let mut tree = ImageTree::default();
            for (i, piece) in input.chunks(chunk).enumerate() {
                let first = (i == 0).then(|| *blake3::hash(piece).as_bytes());
                tree.push(chaining_value((i * chunk) as u64, piece), first);
                if i == 2 {
                    let json = serde_json::to_string(&tree).unwrap();
                    tree = serde_json::from_str(&json).unwrap();
                    assert!(tree.is_valid());
                }
            }
            assert_eq!(tree.finish(), Some(*blake3::hash(input).as_bytes()), "length {len}");
        }
        assert_eq!(ImageTree::default().finish(), Some(*blake3::hash(b"").as_bytes()));
    }

    #[test]
    fn zero_runs_hash_like_zero_bytes() {
        let chunk = 4096u64;
        let zeros = vec![0u8; 3 * chunk as usize + 100];
        let cvs = zero_chaining_values(chunk, 2 * chunk + 100, chunk);
        assert_eq!(cvs.len(), 3);
        assert_eq!(cvs[0], chaining_value(chunk, &zeros[..chunk as usize]));
        assert_eq!(cvs[2], chaining_value(3 * chunk, &zeros[..100]));
        assert_eq!(zero_hash(zeros.len() as u64), *blake3::hash(&zeros).as_bytes());
    }

    #[test]
    fn a_damaged_state_is_not_valid() {
        let mut t = ImageTree::default();
        t.push([1; 32], Some([2; 32]));
        t.push([3; 32], None);
        assert!(t.is_valid());
        let mut bad = t.clone();
        bad.stack.clear();
        assert!(!bad.is_valid());
        let mut bad = t;
        bad.pending = Some("zz".repeat(32));
        assert!(!bad.is_valid());
    }
}
