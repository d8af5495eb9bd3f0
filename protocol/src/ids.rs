//! Randomness comes in from outside: the core draws session ids, socket ids
//! and ObjectIds from an [`IdGenerator`] that the host seeds.

use rand_chacha::ChaCha12Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

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

/// A predictable generator for tests: each byte is a running counter.
#[derive(Debug, Default)]
pub struct CounterIds(u64);

impl IdGenerator for CounterIds {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0 as u8;
        }
    }
}

/// URL-safe alphabet for session and socket ids.
const SID_ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Draws a 20-character URL-safe id (120 bits).
pub(crate) fn new_sid(ids: &mut dyn IdGenerator) -> String {
    let mut raw = [0u8; 20];
    ids.fill(&mut raw);
    raw.iter().map(|b| SID_ALPHABET[(b & 63) as usize] as char).collect()
}
