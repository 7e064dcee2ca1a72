//! Helpers shared by the integration tests.
#![allow(dead_code)]

use aes::Aes128;
use ccm::aead::generic_array::GenericArray;
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U13, U8};
use ccm::Ccm;
use gatehouse_lora_proto::{DevAddr, Dir, Key};

pub const KEY: Key = Key([
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
]);
pub const DEV: DevAddr = DevAddr(0x2601_1bda);

pub fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// AES-128-CCM, M = 8, L = 2, as the link uses it.
pub fn ccm(key: &[u8]) -> Ccm<Aes128, U8, U13> {
    Ccm::new(GenericArray::from_slice(key))
}

/// Seals arbitrary plaintext under a header the way the link does (nonce dev_addr |
/// fcnt | dir | byte0 | 0 0 0, AAD the header), bypassing the payload encoder, to hand
/// `open` authentic frames with any payload.
pub fn raw_seal(byte0: u8, fcnt: u32, dir: Dir, plain: &[u8]) -> Vec<u8> {
    let mut hdr = vec![byte0];
    hdr.extend_from_slice(&DEV.0.to_be_bytes());
    hdr.extend_from_slice(&fcnt.to_be_bytes());
    let mut nonce = hdr[1..9].to_vec();
    nonce.extend_from_slice(&[u8::from(dir == Dir::Down), byte0, 0, 0, 0]);
    let mut body = plain.to_vec();
    let tag = ccm(&KEY.0)
        .encrypt_in_place_detached(GenericArray::from_slice(&nonce), &hdr, &mut body)
        .unwrap();
    hdr.extend_from_slice(&body);
    hdr.extend_from_slice(&tag);
    hdr
}

/// xorshift64*: deterministic pseudo-random numbers for the mutation tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}
