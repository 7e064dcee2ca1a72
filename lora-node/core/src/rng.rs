//! [`Jitter`]: a tiny deterministic PRNG (xorshift32, Marsaglia 2003) for retry and
//! heartbeat jitter, so that nodes that lost the same frame (a collision) do not collide
//! again. Not for anything secret: the seed is the node's address, key bytes and boot
//! count, so two nodes (and two boots of one node) draw different sequences.

#[derive(Debug, Clone)]
pub(crate) struct Jitter(u32);

impl Jitter {
    pub(crate) fn new(dev_addr: u32, key: &[u8; 16], reboots: u16) -> Jitter {
        let mut seed = dev_addr ^ 0x9E37_79B9;
        for chunk in key.chunks_exact(4) {
            let mut word = [0u8; 4];
            word.copy_from_slice(chunk);
            seed = seed.rotate_left(5) ^ u32::from_le_bytes(word);
        }
        seed ^= u32::from(reboots).wrapping_mul(0x85EB_CA6B);
        // xorshift32 must not start at 0.
        Jitter(if seed == 0 { 0x1234_5678 } else { seed })
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x
    }

    /// A value in `0..bound` (0 when `bound` is 0).
    pub(crate) fn below(&mut self, bound: u32) -> u32 {
        if bound == 0 {
            0
        } else {
            self.next_u32() % bound
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differs_per_node_and_boot_and_stays_in_bounds() {
        let key = [7u8; 16];
        let a: [u32; 4] = core::array::from_fn({
            let mut j = Jitter::new(1, &key, 0);
            move |_| j.next_u32()
        });
        let b: [u32; 4] = core::array::from_fn({
            let mut j = Jitter::new(2, &key, 0);
            move |_| j.next_u32()
        });
        let c: [u32; 4] = core::array::from_fn({
            let mut j = Jitter::new(1, &key, 1);
            move |_| j.next_u32()
        });
        assert_ne!(a, b);
        assert_ne!(a, c);
        let mut j = Jitter::new(0, &[0; 16], 0);
        assert!((0..1000).all(|_| j.below(10) < 10));
        assert_eq!(j.below(0), 0);
    }
}
