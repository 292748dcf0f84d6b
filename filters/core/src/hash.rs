//! A hasher for keys no client chooses, where the standard SipHash, built against chosen
//! collisions, would be paid on every request for nothing.

use std::hash::{BuildHasherDefault, Hasher};

/// Hash maps keyed by what no client chooses: certificate digests (Envoy hashes a certificate
/// it validated against the trust bundle, which a client cannot mint at will; the digest is
/// already uniform), the proxy's context ids (handed out in sequence). The hash is not keyed:
/// behind a listener that accepts untrusted client certificates a client could grind digests
/// into one bucket, which the peer cache's bound (1,024 certificates) keeps to a slower lookup.
pub type TrustedKeys = BuildHasherDefault<TrustedKeyHasher>;

/// Folds the key eight bytes at a time with FxHash's step (rotate, xor, multiply): a fraction
/// of SipHash's instructions. Two keys that share a hash cost a comparison, never a wrong answer.
#[derive(Default)]
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
    use std::hash::BuildHasher;

    use super::TrustedKeys;

    #[test]
    fn spreads_sequential_ids_and_digests_that_differ_in_one_byte() {
        let hash = |key: &dyn Fn(&mut super::TrustedKeyHasher)| {
            let mut hasher = TrustedKeys::default().build_hasher();
            key(&mut hasher);
            std::hash::Hasher::finish(&hasher)
        };
        let ids: std::collections::HashSet<u64> = (0..1000u32).map(|id| hash(&|h| std::hash::Hasher::write_u32(h, id))).collect();
        assert_eq!(ids.len(), 1000);
        let digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let digests: std::collections::HashSet<u64> = (0..digest.len())
            .map(|at| {
                let mut changed = digest.as_bytes().to_vec();
                changed[at] ^= 1;
                hash(&|h| std::hash::Hasher::write(h, &changed))
            })
            .collect();
        assert_eq!(digests.len(), digest.len());
    }
}
