//! Time on air of a LoRa packet, which the duty-cycle budget ([`crate::duty`]) is counted
//! in.
//!
//! Formula of Semtech AN1200.13 ("LoRa Modem Designer's Guide", section 4) and the SX1262
//! datasheet (rev. 2.1, section 6.1.4), for SF7 to SF12:
//!
//! ```text
//! T_sym      = 2^SF / BW
//! DE         = 1 when T_sym >= 16 ms (low data rate optimisation, SF11/SF12 at 125 kHz,
//!              SF12 at 250 kHz), else 0
//! IH         = 1 for implicit header, 0 for explicit; CRC = 1 when the payload CRC is on
//! n_payload  = 8 + max(ceil((8 PL - 4 SF + 28 + 16 CRC - 20 IH) / (4 (SF - 2 DE))), 0) * (CR + 4)
//! T_packet   = (n_preamble + 4.25 + n_payload) * T_sym
//! ```
//!
//! `PL` is the LoRa payload length in bytes, i.e. the whole link frame
//! ([`crate::MAX_FRAME_LEN`] at most). Computed in integers (quarter symbols) and rounded
//! up to the next microsecond, so a budget is never under-charged. Never panics: an
//! invalid modulation (see [`Modulation::check`]) yields `u32::MAX`, which no budget
//! admits.

use core::fmt;

/// The LoRa modulation parameters that set the time on air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Modulation {
    /// Spreading factor, 7 to 12.
    pub sf: u8,
    /// Bandwidth in Hz: 125_000, 250_000 or 500_000.
    pub bw_hz: u32,
    /// Coding rate 1 to 4, meaning 4/5 to 4/8.
    pub cr: u8,
    /// Preamble symbols (8 on this link, as LoRaWAN).
    pub preamble: u16,
    /// Explicit header (on this link: yes).
    pub explicit_header: bool,
    /// Payload CRC (on this link: on, both directions).
    pub crc: bool,
}

/// What is wrong with a [`Modulation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModulationError {
    /// The spreading factor is not 7 to 12.
    SpreadingFactor(u8),
    /// The bandwidth is not 125, 250 or 500 kHz.
    Bandwidth(u32),
    /// The coding rate is not 1 to 4 (4/5 to 4/8).
    CodingRate(u8),
}

impl fmt::Display for ModulationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ModulationError::SpreadingFactor(sf) => {
                write!(f, "spreading factor {sf} not supported: use 7 to 12")
            }
            ModulationError::Bandwidth(bw) => write!(
                f,
                "bandwidth {bw} Hz not supported: use 125000, 250000 or 500000"
            ),
            ModulationError::CodingRate(cr) => {
                write!(f, "coding rate {cr} not supported: use 1 to 4 (4/5 to 4/8)")
            }
        }
    }
}

impl core::error::Error for ModulationError {}

impl Default for Modulation {
    /// SF7, 125 kHz: the link's fastest EU868 data rate.
    fn default() -> Self {
        Modulation::lora(7, 125_000)
    }
}

impl Modulation {
    /// The link's settings at `sf` and `bw_hz`: coding rate 4/5, 8 preamble symbols,
    /// explicit header, CRC on.
    pub const fn lora(sf: u8, bw_hz: u32) -> Modulation {
        Modulation {
            sf,
            bw_hz,
            cr: 1,
            preamble: 8,
            explicit_header: true,
            crc: true,
        }
    }

    /// Whether the parameters are ones this link (and the SX1262) uses.
    pub fn check(&self) -> Result<(), ModulationError> {
        if !(7..=12).contains(&self.sf) {
            return Err(ModulationError::SpreadingFactor(self.sf));
        }
        if !matches!(self.bw_hz, 125_000 | 250_000 | 500_000) {
            return Err(ModulationError::Bandwidth(self.bw_hz));
        }
        if !(1..=4).contains(&self.cr) {
            return Err(ModulationError::CodingRate(self.cr));
        }
        Ok(())
    }

    /// Whether low data rate optimisation is on: the symbol time is 16 ms or more.
    pub fn low_data_rate_optimize(&self) -> bool {
        // 2^SF / BW >= 16 ms  <=>  2^SF * 1000 >= 16 * BW.
        (1u64 << self.sf.min(12)) * 1000 >= 16 * u64::from(self.bw_hz)
    }

    /// Microseconds of one symbol, rounded up (`u32::MAX` if invalid).
    pub fn symbol_us(&self) -> u32 {
        if self.check().is_err() {
            return u32::MAX;
        }
        let us = ((1u64 << self.sf) * 1_000_000).div_ceil(u64::from(self.bw_hz));
        u32::try_from(us).unwrap_or(u32::MAX)
    }

    /// Microseconds on air of a packet with `payload_len` bytes of LoRa payload (the whole
    /// link frame), rounded up; `u32::MAX` if the modulation is invalid.
    pub fn airtime_us(&self, payload_len: usize) -> u32 {
        if self.check().is_err() {
            return u32::MAX;
        }
        let sf = i64::from(self.sf);
        let de = i64::from(self.low_data_rate_optimize());
        let ih = i64::from(!self.explicit_header);
        let crc = i64::from(self.crc);
        let pl = i64::try_from(payload_len)
            .unwrap_or(i64::MAX / 16)
            .min(i64::MAX / 16);
        let num = 8 * pl - 4 * sf + 28 + 16 * crc - 20 * ih;
        let den = 4 * (sf - 2 * de);
        let blocks = if num > 0 { (num + den - 1) / den } else { 0 };
        let n_payload = 8 + blocks.saturating_mul(i64::from(self.cr) + 4);
        // Quarter symbols: 4 * (preamble + 4.25 + n_payload).
        let quarters =
            (4 * i64::from(self.preamble) + 17).saturating_add(n_payload.saturating_mul(4));
        let quarters = u128::try_from(quarters).unwrap_or(0);
        let us = (quarters << self.sf) * 1_000_000;
        let us = us.div_ceil(4 * u128::from(self.bw_hz));
        u32::try_from(us).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_data_rate_optimisation_from_symbol_time() {
        assert!(!Modulation::lora(10, 125_000).low_data_rate_optimize());
        assert!(Modulation::lora(11, 125_000).low_data_rate_optimize());
        assert!(Modulation::lora(12, 125_000).low_data_rate_optimize());
        assert!(!Modulation::lora(11, 250_000).low_data_rate_optimize());
        assert!(Modulation::lora(12, 250_000).low_data_rate_optimize());
        assert!(!Modulation::lora(12, 500_000).low_data_rate_optimize());
    }

    #[test]
    fn invalid_modulations_never_fit_a_budget() {
        for m in [
            Modulation::lora(6, 125_000),
            Modulation::lora(13, 125_000),
            Modulation::lora(7, 0),
            Modulation::lora(7, 200_000),
            Modulation {
                cr: 0,
                ..Modulation::default()
            },
            Modulation {
                cr: 5,
                ..Modulation::default()
            },
        ] {
            assert!(m.check().is_err(), "{m:?}");
            assert_eq!(m.airtime_us(20), u32::MAX);
            assert_eq!(m.symbol_us(), u32::MAX);
        }
        assert_eq!(
            Modulation::lora(6, 125_000)
                .check()
                .map_err(|e| e.to_string()),
            Err("spreading factor 6 not supported: use 7 to 12".to_string())
        );
    }

    #[test]
    fn huge_payload_lengths_do_not_overflow() {
        let m = Modulation::lora(12, 125_000);
        assert_eq!(m.airtime_us(usize::MAX), u32::MAX);
        assert!(m.airtime_us(255) < u32::MAX);
    }
}
