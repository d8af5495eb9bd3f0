//! Randomness comes in from outside: the core draws session ids, socket ids
//! and ObjectIds from an [`IdGenerator`] that the host seeds.

use rand_chacha::ChaCha12Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::model::ObjectId;

/// A source of random bytes for ids. The host seeds it; tests use [`CounterIds`].
pub trait IdGenerator: Send + 'static {
    /// Fills `buf` with fresh bytes.
    fn fill(&mut self, buf: &mut [u8]);
}

/// A cryptographically strong generator from a 32-byte seed (ChaCha12).
///
/// Session ids must not be guessable, so production hosts seed this from the
/// operating system; a fixed seed replays a simulation exactly.
#[derive(Debug)]
pub struct SeededIds(ChaCha12Rng);

impl SeededIds {
    /// A generator from a seed.
    pub fn new(seed: [u8; 32]) -> Self {
        SeededIds(ChaCha12Rng::from_seed(seed))
    }
}

impl IdGenerator for SeededIds {
    fn fill(&mut self, buf: &mut [u8]) {
        self.0.fill_bytes(buf);
    }
}

/// A predictable generator for tests: splitmix64 over a counter, so a
/// test replays exactly and ids do not repeat.
#[derive(Debug, Default)]
pub struct CounterIds(u64);

impl IdGenerator for CounterIds {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// A fresh ObjectId: the seconds of `now_ms` (clamped to what 4 bytes hold),
/// then 8 random bytes. For users; message ids come from the chat layer.
pub fn new_object_id(ids: &mut dyn IdGenerator, now_ms: i64) -> ObjectId {
    let seconds = now_ms.div_euclid(1000).clamp(0, i64::from(u32::MAX)) as u32;
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&seconds.to_be_bytes());
    ids.fill(&mut b[4..]);
    ObjectId(b)
}

/// A fast hasher for maps keyed by the integer ids the core and its hosts
/// hand out themselves (session keys, socket ids, connection ids): those are
/// never chosen by a peer, so SipHash's defence against flooding buys
/// nothing there and costs a hash per delivery.
#[derive(Debug, Default, Clone, Copy)]
pub struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// A `HashMap` keyed by self-assigned integer ids.
pub type IntMap<K, V> = std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IntHasher>>;

/// URL-safe alphabet for session and socket ids.
const SID_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Draws a 20-character URL-safe id (120 bits).
pub(crate) fn new_sid(ids: &mut dyn IdGenerator) -> String {
    let mut raw = [0u8; 20];
    ids.fill(&mut raw);
    raw.iter()
        .map(|b| SID_ALPHABET[(b & 63) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_ids_replay_and_do_not_repeat() {
        let (mut a, mut b) = (CounterIds::default(), CounterIds::default());
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let s = new_sid(&mut a);
            assert_eq!(s, new_sid(&mut b));
            assert!(seen.insert(s));
        }
    }

    #[test]
    fn object_id_starts_with_the_seconds() {
        let mut ids = CounterIds::default();
        let id = new_object_id(&mut ids, 1_732_540_800_999);
        assert_eq!(id.seconds(), 1_732_540_800);
        let mut again = CounterIds::default();
        let mut tail = [0u8; 8];
        again.fill(&mut tail);
        assert_eq!(id.0[4..], tail, "the rest comes from the generator");
        assert_eq!(new_object_id(&mut ids, -5).seconds(), 0);
        assert_eq!(new_object_id(&mut ids, i64::MAX).seconds(), u32::MAX);
    }
}
