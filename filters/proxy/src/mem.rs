//! `memcmp` for the modules, eight bytes at a time.
//!
//! On wasm32-wasip1 every slice and string comparison (`==`, `cmp`, hash-map keys, regorus's
//! string values) ends in libc's `memcmp`, and wasi-libc's is musl's: one byte per iteration,
//! about 18 Wasm instructions a byte. Comparing a peer certificate's digest (64 hex digits) cost
//! about 1,150 instructions that way. A definition in the module itself is what the linker takes,
//! so libc's is never linked. Elsewhere (the tests) it is an ordinary function.
#![expect(unsafe_code, reason = "libc's memcmp, with its C signature")]

/// Compares the first `n` bytes of `a` and `b` as unsigned bytes: negative, zero or positive as
/// `a` sorts before, equal to or after `b` (C's `memcmp`).
///
/// # Safety
/// `a` and `b` point to at least `n` readable bytes each.
#[cfg_attr(target_arch = "wasm32", unsafe(no_mangle))]
#[cfg_attr(not(any(target_arch = "wasm32", test)), expect(dead_code, reason = "only the modules link it"))]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut at = 0;
    while n - at >= 8 {
        // SAFETY: `at + 8 <= n`, so both words are within the `n` bytes the caller vouches for.
        let (x, y) = unsafe { (a.add(at).cast::<u64>().read_unaligned(), b.add(at).cast::<u64>().read_unaligned()) };
        if x != y {
            // The first byte in memory is the least significant one (Wasm is little-endian):
            // swapped, the words order as the bytes do.
            return if x.swap_bytes() < y.swap_bytes() { -1 } else { 1 };
        }
        at += 8;
    }
    while at < n {
        // SAFETY: `at < n`.
        let (x, y) = unsafe { (*a.add(at), *b.add(at)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        at += 1;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::memcmp;

    /// musl's `memcmp`, the one this replaces.
    fn bytewise(a: &[u8], b: &[u8]) -> i32 {
        a.iter().zip(b).find(|(x, y)| x != y).map_or(0, |(x, y)| i32::from(*x) - i32::from(*y))
    }

    fn compare(a: &[u8], b: &[u8]) -> i32 {
        assert_eq!(a.len(), b.len());
        // SAFETY: both slices hold `a.len()` bytes.
        unsafe { memcmp(a.as_ptr(), b.as_ptr(), a.len()) }
    }

    /// Every length up to three words and a tail, a difference at every position, in both
    /// directions, with bytes on both sides of 0x80 (compared unsigned), at every alignment.
    #[test]
    fn orders_as_the_bytewise_memcmp_does() {
        let base: Vec<u8> = (0..40u8).map(|i| i.wrapping_mul(37).wrapping_add(0x70)).collect();
        for offset in 0..8 {
            for len in 0..=base.len() - offset {
                let a = &base[offset..offset + len];
                assert_eq!(compare(a, a), 0, "len {len}");
                for at in 0..len {
                    for delta in [1u8, 0x7f, 0x80, 0xff] {
                        let mut b = a.to_vec();
                        b[at] = b[at].wrapping_add(delta);
                        // Later bytes differ the other way: only the first difference counts.
                        for later in b.iter_mut().skip(at + 1) {
                            *later = later.wrapping_sub(1);
                        }
                        let (got, want) = (compare(a, &b), bytewise(a, &b));
                        assert_eq!(got.signum(), want.signum(), "len {len}, offset {offset}, byte {at}, +{delta:#x}");
                        assert_eq!(compare(&b, a).signum(), -want.signum());
                    }
                }
            }
        }
    }
}
