//! A hasher for the request path's hash maps, where the standard SipHash would be paid on every
//! request for a strength the keys do not call for.

use std::hash::{BuildHasher, Hasher, RandomState};

/// Hash maps keyed by what no client chooses freely: certificate digests (Envoy hashes a
/// certificate it validated against the trust bundle; the digest is already uniform), the
/// proxy's context ids (handed out in sequence). Each map starts its hashes from its own secret
/// seed, drawn from the standard library's random keys when the map is made, so a client that
/// can mint certificates (behind a listener that accepts untrusted ones) cannot work out offline
/// which digests share a bucket. The step is not a keyed PRF: the seed denies precomputation,
/// and the peer cache's bound (1,024 certificates) keeps any collisions to a slower lookup.
#[derive(Clone)]
pub struct TrustedKeys {
    seed: u64,
}

impl Default for TrustedKeys {
    fn default() -> Self {
        Self { seed: RandomState::new().build_hasher().finish() }
    }
}

impl BuildHasher for TrustedKeys {
    type Hasher = TrustedKeyHasher;

    fn build_hasher(&self) -> TrustedKeyHasher {
        TrustedKeyHasher(self.seed)
    }
}

/// Folds the key eight bytes at a time with FxHash's step (rotate, xor, multiply): a fraction
/// of SipHash's instructions. Two keys that share a hash cost a comparison, never a wrong answer.
pub struct TrustedKeyHasher(u64);

impl TrustedKeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for TrustedKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        for &byte in chunks.remainder() {
            self.add(u64::from(byte));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hasher};

    use super::TrustedKeys;

    const DIGEST: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn spreads_sequential_ids_and_digests_that_differ_in_one_byte() {
        let keys = TrustedKeys::default();
        let ids: HashSet<u64> = (0..1000u32).map(|id| keys.hash_one(id)).collect();
        assert_eq!(ids.len(), 1000);
        let digests: HashSet<u64> = (0..DIGEST.len())
            .map(|at| {
                let mut changed = DIGEST.as_bytes().to_vec();
                changed[at] ^= 1;
                let mut hasher = keys.build_hasher();
                hasher.write(&changed);
                hasher.finish()
            })
            .collect();
        assert_eq!(digests.len(), DIGEST.len());
    }

    #[test]
    fn each_map_hashes_from_its_own_seed() {
        let (one, other) = (TrustedKeys::default(), TrustedKeys::default());
        assert_ne!(one.hash_one(DIGEST), other.hash_one(DIGEST));
        assert_eq!(one.hash_one(DIGEST), one.clone().hash_one(DIGEST), "a map hashes a key the same way every time");
    }
}
