//! EU868 duty cycle: the sub-bands a transmitter may use and how much of every hour it may
//! spend transmitting in each, and [`DutyBudget`], the bookkeeping every transmitter (a
//! node, the forwarder) keeps to stay inside those limits.
//!
//! Limits: ETSI EN 300 220-2 V3.2.1 (table 2, "non-specific short range devices") and
//! CEPT ERC Recommendation 70-03 Annex 1, bands h1.3 to h1.7 and h1.9, with the duty cycle
//! taken over one hour:
//!
//! | [`SubBand`] | MHz | duty cycle | airtime per hour |
//! |---|---|---|---|
//! | `G863_0` | 863.0 - 865.0 | 0.1 % | 3.6 s |
//! | `G865_0` | 865.0 - 868.0 | 1 % | 36 s |
//! | `G868_0` | 868.0 - 868.6 | 1 % | 36 s |
//! | `G868_7` | 868.7 - 869.2 | 0.1 % | 3.6 s |
//! | `G869_4` | 869.4 - 869.65 | 10 % | 360 s |
//! | `G869_7` | 869.7 - 870.0 | 1 % | 36 s |
//!
//! A frequency belongs to a sub-band when its channel centre lies in `[low, high)`
//! ([`SubBand::of`]); frequencies outside all of them may not be used.
//!
//! [`DutyBudget`] counts, per sub-band, the airtime of the transmissions that started in
//! the last hour (a sliding window, not a fixed clock hour). It promises that if every
//! transmission goes through [`DutyBudget::can_send`] and then [`DutyBudget::record`],
//! the airtime started in any one-hour window never exceeds the band's limit. It keeps at
//! most `N` transmissions in a fixed ring (no allocator); when the ring is full, the
//! oldest transmission is folded into a later one of the same band, which can only make
//! the budget stricter, never looser. [`Priority::Normal`] traffic may use
//! [`NORMAL_SHARE_PERCENT`] of a band's hour; the rest is kept for [`Priority::Alarm`].
//! Time is an argument (`now_ms`, any monotonic millisecond clock); nothing panics.

use core::fmt;

/// Milliseconds in the duty-cycle window.
pub const HOUR_MS: u64 = 3_600_000;
/// Percent of a band's hourly airtime that normal traffic may use; the rest is the alarm
/// reserve.
pub const NORMAL_SHARE_PERCENT: u64 = 80;

/// An EU868 sub-band with its own duty-cycle limit (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SubBand {
    /// 863.0 - 865.0 MHz, 0.1 %.
    G863_0,
    /// 865.0 - 868.0 MHz, 1 %.
    G865_0,
    /// 868.0 - 868.6 MHz, 1 % (LoRaWAN's default channels 868.1/868.3/868.5).
    G868_0,
    /// 868.7 - 869.2 MHz, 0.1 %.
    G868_7,
    /// 869.4 - 869.65 MHz, 10 % (LoRaWAN's RX2 channel 869.525).
    G869_4,
    /// 869.7 - 870.0 MHz, 1 %.
    G869_7,
}

impl SubBand {
    /// Every sub-band, by frequency.
    pub const ALL: [SubBand; 6] = [
        SubBand::G863_0,
        SubBand::G865_0,
        SubBand::G868_0,
        SubBand::G868_7,
        SubBand::G869_4,
        SubBand::G869_7,
    ];

    /// The sub-band a channel centred on `freq_hz` lies in, `None` if it lies in none
    /// (then it may not be used).
    pub fn of(freq_hz: u32) -> Option<SubBand> {
        SubBand::ALL.into_iter().find(|band| {
            let (low, high) = band.range_hz();
            (low..high).contains(&freq_hz)
        })
    }

    /// `[low, high)` in Hz.
    pub fn range_hz(self) -> (u32, u32) {
        match self {
            SubBand::G863_0 => (863_000_000, 865_000_000),
            SubBand::G865_0 => (865_000_000, 868_000_000),
            SubBand::G868_0 => (868_000_000, 868_600_000),
            SubBand::G868_7 => (868_700_000, 869_200_000),
            SubBand::G869_4 => (869_400_000, 869_650_000),
            SubBand::G869_7 => (869_700_000, 870_000_000),
        }
    }

    /// The duty-cycle limit in tenths of a percent (10 = 1 %).
    pub fn duty_cycle_permille(self) -> u32 {
        match self {
            SubBand::G863_0 | SubBand::G868_7 => 1,
            SubBand::G865_0 | SubBand::G868_0 | SubBand::G869_7 => 10,
            SubBand::G869_4 => 100,
        }
    }

    /// Microseconds of airtime allowed in any hour (36_000_000 at 1 %).
    pub fn budget_us(self) -> u64 {
        // permille of an hour in microseconds = permille * (HOUR_MS * 1000) / 1000.
        u64::from(self.duty_cycle_permille()) * HOUR_MS
    }

    /// Microseconds of airtime a transmission of `priority` may bring the hour's total to.
    pub fn limit_us(self, priority: Priority) -> u64 {
        match priority {
            Priority::Alarm => self.budget_us(),
            Priority::Normal => self.budget_us() * NORMAL_SHARE_PERCENT / 100,
        }
    }

    /// A short name for logs: `"868.0-868.6"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SubBand::G863_0 => "863.0-865.0",
            SubBand::G865_0 => "865.0-868.0",
            SubBand::G868_0 => "868.0-868.6",
            SubBand::G868_7 => "868.7-869.2",
            SubBand::G869_4 => "869.4-869.65",
            SubBand::G869_7 => "869.7-870.0",
        }
    }
}

impl fmt::Display for SubBand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much of a band's hour a transmission may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Priority {
    /// Alarms and their acknowledgements: the whole budget.
    Alarm,
    /// Everything else: [`NORMAL_SHARE_PERCENT`] of it.
    Normal,
}

impl Priority {
    /// `"alarm"` or `"normal"` (as in the forwarder's `lora/down` messages).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Alarm => "alarm",
            Priority::Normal => "normal",
        }
    }
}

/// One recorded transmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tx {
    at_ms: u64,
    band: SubBand,
    airtime_us: u32,
}

impl Tx {
    /// Still inside the hour ending at `now_ms` (also if it lies in the future: a clock that
    /// stepped back must not free budget).
    fn live(&self, now_ms: u64) -> bool {
        now_ms < self.at_ms.saturating_add(HOUR_MS)
    }
}

/// The sliding-hour airtime budget of one transmitter, per sub-band, over a ring of at
/// most `N` recent transmissions (`N` must exceed the number of sub-bands; checked at
/// compile time). See the module docs for what it promises.
#[derive(Debug, Clone)]
pub struct DutyBudget<const N: usize = 64> {
    /// Ordered by `at_ms`, oldest first.
    txs: heapless::Vec<Tx, N>,
}

impl<const N: usize> Default for DutyBudget<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> DutyBudget<N> {
    const ROOM: () = assert!(
        N > SubBand::ALL.len(),
        "a DutyBudget needs more entries than there are sub-bands"
    );

    /// An empty budget: nothing sent in the last hour.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::ROOM;
        DutyBudget {
            txs: heapless::Vec::new(),
        }
    }

    /// Microseconds of airtime in `band` started within the hour up to `now_ms`.
    pub fn used_us(&self, now_ms: u64, band: SubBand) -> u64 {
        self.txs
            .iter()
            .filter(|tx| tx.band == band && tx.live(now_ms))
            .map(|tx| u64::from(tx.airtime_us))
            .sum()
    }

    /// Whether a transmission of `airtime_us` in `band` at `now_ms` stays within the
    /// limit for `priority`.
    pub fn can_send(
        &self,
        now_ms: u64,
        band: SubBand,
        airtime_us: u32,
        priority: Priority,
    ) -> bool {
        self.used_us(now_ms, band) + u64::from(airtime_us) <= band.limit_us(priority)
    }

    /// Counts a transmission that started at `now_ms` (times that go backwards are taken
    /// as the latest recorded time).
    pub fn record(&mut self, now_ms: u64, band: SubBand, airtime_us: u32) {
        self.txs.retain(|tx| tx.live(now_ms));
        let at_ms = self
            .txs
            .last()
            .map_or(now_ms, |last| last.at_ms.max(now_ms));
        if self.txs.is_full() {
            self.fold_oldest();
        }
        // After fold_oldest there is room (N > number of bands, see ROOM).
        let _ = self.txs.push(Tx {
            at_ms,
            band,
            airtime_us,
        });
    }

    /// [`can_send`](Self::can_send), and if so [`record`](Self::record); returns whether
    /// the transmission may go ahead.
    pub fn try_send(
        &mut self,
        now_ms: u64,
        band: SubBand,
        airtime_us: u32,
        priority: Priority,
    ) -> bool {
        let ok = self.can_send(now_ms, band, airtime_us, priority);
        if ok {
            self.record(now_ms, band, airtime_us);
        }
        ok
    }

    /// Milliseconds from `now_ms` until a transmission of `airtime_us` in `band` fits the
    /// limit for `priority` (0: now), `None` if it never fits (longer than the limit).
    pub fn wait_ms(
        &self,
        now_ms: u64,
        band: SubBand,
        airtime_us: u32,
        priority: Priority,
    ) -> Option<u64> {
        let limit = band.limit_us(priority);
        let airtime = u64::from(airtime_us);
        if airtime > limit {
            return None;
        }
        let mut used = self.used_us(now_ms, band);
        if used + airtime <= limit {
            return Some(0);
        }
        for tx in self
            .txs
            .iter()
            .filter(|tx| tx.band == band && tx.live(now_ms))
        {
            used -= u64::from(tx.airtime_us);
            if used + airtime <= limit {
                return Some(tx.at_ms.saturating_add(HOUR_MS) - now_ms);
            }
        }
        // Unreachable: with every transmission expired, used is 0 and airtime <= limit.
        Some(HOUR_MS)
    }

    /// Makes room in a full ring: folds the oldest transmission that has a later one in
    /// the same band into that later one (a later start only makes it count longer).
    fn fold_oldest(&mut self) {
        let pair = self.txs.iter().enumerate().find_map(|(i, old)| {
            self.txs
                .iter()
                .enumerate()
                .skip(i + 1)
                .find(|(_, later)| later.band == old.band)
                .map(|(j, _)| (i, j))
        });
        if let Some((i, j)) = pair {
            let old = self.txs.remove(i);
            // j > i, so after the removal the later one sits at j - 1.
            if let Some(later) = self.txs.get_mut(j - 1) {
                later.airtime_us = later.airtime_us.saturating_add(old.airtime_us);
            }
        }
    }
}
