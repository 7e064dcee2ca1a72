//! [`FlashLog`]: a [`Storage`] in two pages of internal flash, for the boards.
//!
//! Each store appends one 8-byte record (`fcnt` u32, `reboots` u16, check u16, little
//! endian) to the next erased slot of the current page; flash is only ever programmed
//! from erased (all `0xFF`) to a value, as NOR flash requires. When the page is full, the
//! other page is erased and the record goes to its first slot; the full page stays as it
//! is until the log comes back to it. So at every moment at least one complete record
//! exists (a power loss during the erase of one page leaves the other), and
//! [`Storage::load`] returns the valid record with the highest `fcnt` in either page
//! (stores only ever increase it). A torn write fails the check and is ignored.
//!
//! Wear: one record per [`FCNT_SKIP`](crate::FCNT_SKIP) frames and per boot; a 4 KiB page
//! holds 512 records, so each page is erased once per 1,024 stores (32,768 frames).
//! Works with any [`NorFlash`] whose write size divides 8 (nRF52 NVMC: 4, STM32WL: 8).

use embedded_storage::nor_flash::NorFlash;

use crate::storage::{Storage, StorageError, Stored};

/// Bytes of one record.
pub const RECORD_LEN: usize = 8;

/// The counter log in flash pages `[base, base + 2 * F::ERASE_SIZE)` (offsets as the
/// flash driver counts them; `base` aligned to the erase size).
pub struct FlashLog<F: NorFlash> {
    flash: F,
    base: u32,
    /// Page (0/1) and slot the next record goes to.
    page: u32,
    slot: u32,
}

impl<F: NorFlash> FlashLog<F> {
    /// Uses two erase pages from `base`; scans them to find where the next record goes.
    pub fn new(flash: F, base: u32) -> FlashLog<F> {
        let mut log = FlashLog {
            flash,
            base,
            page: 0,
            slot: 0,
        };
        if let Some((page, slot, _)) = log.latest() {
            log.page = page;
            log.slot = slot + 1;
        } else {
            // Blank (or garbage): start on page 0; `store` erases as needed.
            log.slot = Self::slots();
            log.page = 1;
        }
        log
    }

    pub fn into_inner(self) -> F {
        self.flash
    }

    fn slots() -> u32 {
        (F::ERASE_SIZE / RECORD_LEN) as u32
    }

    fn offset(&self, page: u32, slot: u32) -> u32 {
        self.base + page * F::ERASE_SIZE as u32 + slot * RECORD_LEN as u32
    }

    fn read(&mut self, page: u32, slot: u32) -> Option<Stored> {
        let mut buf = [0u8; RECORD_LEN];
        self.flash.read(self.offset(page, slot), &mut buf).ok()?;
        decode(&buf)
    }

    /// The valid record with the highest fcnt: (page, slot, record).
    fn latest(&mut self) -> Option<(u32, u32, Stored)> {
        let mut best: Option<(u32, u32, Stored)> = None;
        for page in 0..2 {
            for slot in 0..Self::slots() {
                if let Some(rec) = self.read(page, slot) {
                    if best.is_none_or(|(_, _, b)| rec.fcnt >= b.fcnt) {
                        best = Some((page, slot, rec));
                    }
                }
            }
        }
        best
    }

    /// Whether a slot is still erased (a torn record also counts as used).
    fn erased(&mut self, page: u32, slot: u32) -> bool {
        let mut buf = [0u8; RECORD_LEN];
        self.flash.read(self.offset(page, slot), &mut buf).is_ok() && buf.iter().all(|&b| b == 0xFF)
    }
}

impl<F: NorFlash> Storage for FlashLog<F> {
    fn load(&mut self) -> Option<Stored> {
        self.latest().map(|(_, _, rec)| rec)
    }

    fn store(&mut self, value: Stored) -> Result<(), StorageError> {
        // Skip used slots (a torn write left garbage) in the current page.
        while self.slot < Self::slots() && !self.erased(self.page, self.slot) {
            self.slot += 1;
        }
        if self.slot >= Self::slots() {
            let other = 1 - self.page;
            let from = self.offset(other, 0);
            self.flash
                .erase(from, from + F::ERASE_SIZE as u32)
                .map_err(|_| StorageError::WriteFailed)?;
            self.page = other;
            self.slot = 0;
        }
        let offset = self.offset(self.page, self.slot);
        self.slot += 1;
        self.flash
            .write(offset, &encode(value))
            .map_err(|_| StorageError::WriteFailed)?;
        match self.read(self.page, self.slot - 1) {
            Some(back) if back == value => Ok(()),
            _ => Err(StorageError::WriteFailed),
        }
    }
}

fn check(fcnt: u32, reboots: u16) -> u16 {
    (fcnt as u16) ^ ((fcnt >> 16) as u16).rotate_left(5) ^ reboots.rotate_left(11) ^ 0xA55A
}

fn encode(v: Stored) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[..4].copy_from_slice(&v.fcnt.to_le_bytes());
    out[4..6].copy_from_slice(&v.reboots.to_le_bytes());
    out[6..].copy_from_slice(&check(v.fcnt, v.reboots).to_le_bytes());
    out
}

fn decode(b: &[u8; RECORD_LEN]) -> Option<Stored> {
    let fcnt = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let reboots = u16::from_le_bytes([b[4], b[5]]);
    let c = u16::from_le_bytes([b[6], b[7]]);
    (c == check(fcnt, reboots)).then_some(Stored { fcnt, reboots })
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_storage::nor_flash::{ErrorType, NorFlashErrorKind, ReadNorFlash};

    /// NOR flash in RAM: erase sets 0xFF, a write may only clear bits.
    struct RamFlash {
        mem: [u8; 2 * 256],
        erases: u32,
    }

    impl ErrorType for RamFlash {
        type Error = NorFlashErrorKind;
    }

    impl ReadNorFlash for RamFlash {
        const READ_SIZE: usize = 1;
        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
            let o = offset as usize;
            let src = self
                .mem
                .get(o..o + bytes.len())
                .ok_or(NorFlashErrorKind::OutOfBounds)?;
            bytes.copy_from_slice(src);
            Ok(())
        }
        fn capacity(&self) -> usize {
            self.mem.len()
        }
    }

    impl NorFlash for RamFlash {
        const WRITE_SIZE: usize = 8;
        const ERASE_SIZE: usize = 256;
        fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
            self.erases += 1;
            self.mem[from as usize..to as usize].fill(0xFF);
            Ok(())
        }
        fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
            let o = offset as usize;
            for (d, s) in self.mem[o..o + bytes.len()].iter_mut().zip(bytes) {
                assert_eq!(*d, 0xFF, "programming a byte that is not erased");
                *d &= *s;
            }
            Ok(())
        }
    }

    #[test]
    fn blank_flash_loads_nothing_then_keeps_the_latest_across_page_switches() {
        let flash = RamFlash {
            mem: [0xFF; 512],
            erases: 0,
        };
        let mut log = FlashLog::new(flash, 0);
        assert_eq!(log.load(), None);
        // 32 records per page: 100 stores switch pages three times.
        for i in 0..100u32 {
            let v = Stored {
                fcnt: 1 + 32 * i,
                reboots: i as u16,
            };
            log.store(v).unwrap();
            assert_eq!(log.load(), Some(v));
            // A "reboot": a fresh log over the same flash finds the same record.
            let flash = log.into_inner();
            log = FlashLog::new(flash, 0);
            assert_eq!(log.load(), Some(v));
        }
        let flash = log.into_inner();
        assert_eq!(flash.erases, 4);
    }

    #[test]
    fn a_torn_record_is_ignored_and_skipped() {
        let mut flash = RamFlash {
            mem: [0xFF; 512],
            erases: 0,
        };
        flash.mem[..8].copy_from_slice(&encode(Stored {
            fcnt: 33,
            reboots: 1,
        }));
        // Half-written second record.
        flash.mem[8..12].copy_from_slice(&[0x41, 0, 0, 0]);
        let mut log = FlashLog::new(flash, 0);
        assert_eq!(
            log.load(),
            Some(Stored {
                fcnt: 33,
                reboots: 1
            })
        );
        let next = Stored {
            fcnt: 65,
            reboots: 2,
        };
        log.store(next).unwrap();
        assert_eq!(FlashLog::new(log.into_inner(), 0).load(), Some(next));
    }
}
