//! [`FlashLog`]: a [`Storage`] in two pages of internal flash, for the boards.
//!
//! Each store appends one 16-byte record to the next two erased 8-byte slots of the
//! current page; flash is only ever programmed from erased (all `0xFF`) to a value, as
//! NOR flash requires. When the page is full, the other page is erased and the record
//! goes to its first slots; the full page stays as it is until the log comes back to it.
//! So at every moment at least one complete record exists (a power loss during the erase
//! of one page leaves the other). A torn write fails its checks and is ignored.
//!
//! Records (little endian):
//!
//! | bytes | v1 (8, before the downlink mark existed) | v2 (16, written now) |
//! |---|---|---|
//! | 0..4 | `fcnt` u32 | `fcnt` u32 |
//! | 4..6 | `reboots` u16 | `reboots` u16 |
//! | 6..8 | check(fcnt, reboots) | check(fcnt, reboots) |
//! | 8..12 | | `down_mark` u32 |
//! | 12..14 | | CRC-16/CCITT-FALSE of bytes 0..12 |
//! | 14..16 | | check(down_mark, crc) xor 0xFFFF |
//!
//! A v2 record's first half is a valid v1 record (firmware from before reads the uplink
//! counter right, and the log stays readable both ways); its second half never is (the
//! inverted check), so it is never taken for a record of its own. A v1 record loads with
//! `down_mark` 0.
//!
//! [`Storage::load`] merges every valid record of both pages: the highest `fcnt` (with
//! its `reboots`) and the highest `down_mark`. Stores only ever raise each of them, so
//! the maximum is the latest value, also when the latest record is torn (a v2 record
//! whose second half did not make it still counts as v1 for its `fcnt`, and the mark
//! comes from the record before).
//!
//! Wear: one record per [`FCNT_SKIP`](crate::FCNT_SKIP) uplinks, per
//! [`FCNT_DOWN_SKIP`](crate::FCNT_DOWN_SKIP) downlink counters and per boot; a 4 KiB page
//! (nRF52840) holds 256 records, a 2 KiB page (STM32WL) 128, so each page is erased once
//! per 512 (256) stores. Works with any [`NorFlash`] whose write size divides 8 (nRF52
//! NVMC: 4, STM32WL: 8).

use embedded_storage::nor_flash::NorFlash;

use crate::storage::{Storage, StorageError, Stored};

/// Bytes of one slot (and of a v1 record).
pub const SLOT_LEN: usize = 8;
/// Bytes of one record as written now (two slots).
pub const RECORD_LEN: usize = 2 * SLOT_LEN;

/// The counter log in flash pages `[base, base + 2 * F::ERASE_SIZE)` (offsets as the
/// flash driver counts them; `base` aligned to the erase size).
pub struct FlashLog<F: NorFlash> {
    flash: F,
    base: u32,
    /// Page (0/1) and slot from which the next record goes to the first two erased slots.
    page: u32,
    slot: u32,
}

/// A valid record found by a scan.
#[derive(Debug, Clone, Copy)]
struct Found {
    page: u32,
    /// The slot after the record.
    end: u32,
    value: Stored,
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
        if let Some(newest) = log.scan().map(|(newest, _)| newest) {
            log.page = newest.page;
            log.slot = newest.end;
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
        (F::ERASE_SIZE / SLOT_LEN) as u32
    }

    fn offset(&self, page: u32, slot: u32) -> u32 {
        self.base + page * F::ERASE_SIZE as u32 + slot * SLOT_LEN as u32
    }

    fn read_slot(&mut self, page: u32, slot: u32) -> Option<[u8; SLOT_LEN]> {
        let mut buf = [0u8; SLOT_LEN];
        self.flash.read(self.offset(page, slot), &mut buf).ok()?;
        Some(buf)
    }

    /// The record starting at `slot`, and how many slots it takes.
    fn record_at(&mut self, page: u32, slot: u32) -> Option<(Stored, u32)> {
        let first = decode_v1(&self.read_slot(page, slot)?)?;
        if slot + 1 < Self::slots() {
            if let Some(second) = self.read_slot(page, slot + 1) {
                if let Some(down_mark) = decode_v2_tail(&first, &second) {
                    return Some((Stored { down_mark, ..first }, 2));
                }
            }
        }
        Some((first, 1))
    }

    /// The newest record (highest `(fcnt, down_mark)`; its page and end say where the log
    /// goes on) and the merge of all records (see the module docs).
    fn scan(&mut self) -> Option<(Found, Stored)> {
        let mut newest: Option<Found> = None;
        let mut merged: Option<Stored> = None;
        for page in 0..2 {
            let mut slot = 0;
            while slot < Self::slots() {
                let Some((value, len)) = self.record_at(page, slot) else {
                    slot += 1;
                    continue;
                };
                slot += len;
                let key = |v: &Stored| (v.fcnt, v.down_mark);
                if newest.is_none_or(|n| key(&value) >= key(&n.value)) {
                    newest = Some(Found {
                        page,
                        end: slot,
                        value,
                    });
                }
                let m = merged.get_or_insert(value);
                if (value.fcnt, value.reboots) > (m.fcnt, m.reboots) {
                    m.fcnt = value.fcnt;
                    m.reboots = value.reboots;
                }
                m.down_mark = m.down_mark.max(value.down_mark);
            }
        }
        Some((newest?, merged?))
    }

    /// Whether a slot is still erased (a torn record also counts as used).
    fn erased(&mut self, page: u32, slot: u32) -> bool {
        self.read_slot(page, slot)
            .is_some_and(|buf| buf.iter().all(|&b| b == 0xFF))
    }
}

impl<F: NorFlash> Storage for FlashLog<F> {
    fn load(&mut self) -> Option<Stored> {
        self.scan().map(|(_, merged)| merged)
    }

    fn store(&mut self, value: Stored) -> Result<(), StorageError> {
        // The next two erased slots of the current page (a torn write left garbage).
        while self.slot + 1 < Self::slots()
            && !(self.erased(self.page, self.slot) && self.erased(self.page, self.slot + 1))
        {
            self.slot += 1;
        }
        if self.slot + 1 >= Self::slots() {
            let other = 1 - self.page;
            let from = self.offset(other, 0);
            self.flash
                .erase(from, from + F::ERASE_SIZE as u32)
                .map_err(|_| StorageError::WriteFailed)?;
            self.page = other;
            self.slot = 0;
        }
        let slot = self.slot;
        self.slot += 2;
        self.flash
            .write(self.offset(self.page, slot), &encode(value))
            .map_err(|_| StorageError::WriteFailed)?;
        match self.record_at(self.page, slot) {
            Some((back, 2)) if back == value => Ok(()),
            _ => Err(StorageError::WriteFailed),
        }
    }
}

fn check(fcnt: u32, reboots: u16) -> u16 {
    (fcnt as u16) ^ ((fcnt >> 16) as u16).rotate_left(5) ^ reboots.rotate_left(11) ^ 0xA55A
}

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF), bitwise: 12 bytes per store.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

fn encode(v: Stored) -> [u8; RECORD_LEN] {
    let mut out = [0u8; RECORD_LEN];
    out[..4].copy_from_slice(&v.fcnt.to_le_bytes());
    out[4..6].copy_from_slice(&v.reboots.to_le_bytes());
    out[6..8].copy_from_slice(&check(v.fcnt, v.reboots).to_le_bytes());
    out[8..12].copy_from_slice(&v.down_mark.to_le_bytes());
    let crc = crc16(&out[..12]);
    out[12..14].copy_from_slice(&crc.to_le_bytes());
    out[14..].copy_from_slice(&(check(v.down_mark, crc) ^ 0xFFFF).to_le_bytes());
    out
}

/// A v1 record, or the first half of a v2 one (`down_mark` 0).
fn decode_v1(b: &[u8; SLOT_LEN]) -> Option<Stored> {
    let fcnt = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let reboots = u16::from_le_bytes([b[4], b[5]]);
    let c = u16::from_le_bytes([b[6], b[7]]);
    (c == check(fcnt, reboots)).then_some(Stored {
        fcnt,
        reboots,
        down_mark: 0,
    })
}

/// The `down_mark` of a v2 record whose first half decoded as `first`.
fn decode_v2_tail(first: &Stored, b: &[u8; SLOT_LEN]) -> Option<u32> {
    let down_mark = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let crc = u16::from_le_bytes([b[4], b[5]]);
    let c = u16::from_le_bytes([b[6], b[7]]);
    let mut data = [0u8; 12];
    data[..4].copy_from_slice(&first.fcnt.to_le_bytes());
    data[4..6].copy_from_slice(&first.reboots.to_le_bytes());
    data[6..8].copy_from_slice(&check(first.fcnt, first.reboots).to_le_bytes());
    data[8..].copy_from_slice(&down_mark.to_le_bytes());
    (crc == crc16(&data) && c == check(down_mark, crc) ^ 0xFFFF).then_some(down_mark)
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

    fn blank() -> RamFlash {
        RamFlash {
            mem: [0xFF; 512],
            erases: 0,
        }
    }

    #[test]
    fn blank_flash_loads_nothing_then_keeps_the_latest_across_page_switches() {
        let mut log = FlashLog::new(blank(), 0);
        assert_eq!(log.load(), None);
        // 16 records per 256-byte page: 100 stores switch pages six times. Uplink and
        // downlink stores alternate, as a node's do.
        let mut v = Stored::default();
        for i in 0..100u32 {
            if i % 2 == 0 {
                v.fcnt = 1 + 32 * i;
                v.reboots = i as u16;
            } else {
                v.down_mark = 31 + 32 * i;
            }
            log.store(v).unwrap();
            assert_eq!(log.load(), Some(v));
            // A "reboot": a fresh log over the same flash finds the same record.
            let flash = log.into_inner();
            log = FlashLog::new(flash, 0);
            assert_eq!(log.load(), Some(v));
        }
        let flash = log.into_inner();
        assert_eq!(flash.erases, 7);
    }

    /// Two records as the firmware before the downlink mark wrote them (fcnt 33 and 65,
    /// reboots 1 and 2): they load, with mark 0, and the log goes on after them.
    #[test]
    fn records_of_the_old_format_load_with_mark_zero() {
        let mut flash = blank();
        let old_bytes = [
            0x21, 0x00, 0x00, 0x00, 0x01, 0x00, 0x7B, 0xAD, // fcnt 33, reboots 1
            0x41, 0x00, 0x00, 0x00, 0x02, 0x00, 0x1B, 0xB5, // fcnt 65, reboots 2
        ];
        flash.mem[..16].copy_from_slice(&old_bytes);
        let mut log = FlashLog::new(flash, 0);
        let old = Stored {
            fcnt: 65,
            reboots: 2,
            down_mark: 0,
        };
        assert_eq!(log.load(), Some(old));
        let next = Stored {
            fcnt: 97,
            reboots: 3,
            down_mark: 40,
        };
        log.store(next).unwrap();
        let flash = log.into_inner();
        assert_eq!(flash.mem[..16], old_bytes);
        assert_eq!(flash.mem[16..32], encode(next));
        // Old firmware reads the new record's first half as its own format.
        let mut first = [0u8; SLOT_LEN];
        first.copy_from_slice(&flash.mem[16..24]);
        assert_eq!(
            decode_v1(&first),
            Some(Stored {
                down_mark: 0,
                ..next
            })
        );
        assert_eq!(FlashLog::new(flash, 0).load(), Some(next));
    }

    #[test]
    fn a_torn_record_is_ignored_and_skipped() {
        let mut flash = blank();
        let first = Stored {
            fcnt: 33,
            reboots: 1,
            down_mark: 70,
        };
        flash.mem[..16].copy_from_slice(&encode(first));
        // Half-written second record.
        flash.mem[16..20].copy_from_slice(&[0x41, 0, 0, 0]);
        let mut log = FlashLog::new(flash, 0);
        assert_eq!(log.load(), Some(first));
        let next = Stored {
            fcnt: 65,
            reboots: 2,
            down_mark: 70,
        };
        log.store(next).unwrap();
        let flash = log.into_inner();
        assert_eq!(flash.mem[24..40], encode(next));
        assert_eq!(FlashLog::new(flash, 0).load(), Some(next));
    }

    /// Power lost after the first half of a record that raised the uplink block: its
    /// fcnt counts, the mark comes from the record before; the log goes on after it.
    #[test]
    fn a_record_torn_after_its_first_half_keeps_the_previous_mark() {
        let mut flash = blank();
        flash.mem[..16].copy_from_slice(&encode(Stored {
            fcnt: 33,
            reboots: 1,
            down_mark: 95,
        }));
        let torn = encode(Stored {
            fcnt: 65,
            reboots: 1,
            down_mark: 95,
        });
        flash.mem[16..24].copy_from_slice(&torn[..8]);
        let mut log = FlashLog::new(flash, 0);
        let merged = Stored {
            fcnt: 65,
            reboots: 1,
            down_mark: 95,
        };
        assert_eq!(log.load(), Some(merged));
        let next = Stored {
            down_mark: 127,
            ..merged
        };
        log.store(next).unwrap();
        assert_eq!(FlashLog::new(log.into_inner(), 0).load(), Some(next));
    }

    /// A record's second half is never a record of its own, whatever the values.
    #[test]
    fn the_second_half_of_a_record_is_no_record() {
        for (fcnt, reboots, down_mark) in [(0, 0, 0), (1, 0, 1), (33, 1, 31), (u32::MAX, 7, 5)] {
            let r = encode(Stored {
                fcnt,
                reboots,
                down_mark,
            });
            let mut second = [0u8; SLOT_LEN];
            second.copy_from_slice(&r[8..]);
            assert_eq!(decode_v1(&second), None);
        }
        assert_eq!(decode_v1(&[0xFF; SLOT_LEN]), None);
    }
}
