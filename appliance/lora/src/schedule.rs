//! [`TxSchedule`]: which downlinks the forwarder transmits and when (sans-IO: time is an
//! argument, tests move a fake clock).
//!
//! A downlink is taken ([`TxSchedule::offer`]) when it is well formed, its `tx_us` is at
//! least [`MIN_LEAD_US`] ahead, the duty-cycle budget of its sub-band would still allow it
//! together with the downlinks already queued there (ETSI EN 300 220-2, see
//! `gatehouse_lora_proto::duty`; normal traffic may use 80 % of the hour, alarms all of
//! it), and it overlaps no queued transmission — except that an alarm displaces the
//! normal downlinks it overlaps (they are answered `busy`). When its time comes
//! ([`TxSchedule::take_due`], [`DISPATCH_LEAD_US`] early so the radio can be prepared) it
//! is checked again ([`TxSchedule::admit`]): still not late by more than
//! [`LATE_TOLERANCE_US`], and the budget records it or refuses it. So every transmission
//! the forwarder makes went through `DutyBudget::try_send`.

use crate::messages::{decode_frame, DownlinkRequest, Status};
use crate::radio::TxRequest;
use gatehouse_lora_proto::air::MAX_FRAME;
use gatehouse_lora_proto::{DutyBudget, Modulation, Priority, SubBand};

/// The least time between receiving a downlink and its `tx_us`: less, and it is answered
/// `too_late` (the radio needs a few milliseconds over SPI to load and start it).
pub const MIN_LEAD_US: u64 = 20_000;
/// How long before `tx_us` the forwarder hands a downlink to the radio.
pub const DISPATCH_LEAD_US: u64 = 50_000;
/// How late a transmission may still start (a node's receive window is
/// `RX_WINDOW_US` = 200 ms long; starting more than this late would miss it).
pub const LATE_TOLERANCE_US: u64 = 50_000;
/// Transmissions the forwarder's duty budget remembers (a downlink per uplink at most:
/// plenty for an hour of one channel; when full, it only gets stricter).
pub const BUDGET_ENTRIES: usize = 512;

/// A downlink waiting for its time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub id: String,
    pub tx: TxRequest,
    pub band: SubBand,
    pub priority: Priority,
}

impl Queued {
    fn end_us(&self) -> u64 {
        self.tx.at_us + u64::from(self.tx.airtime_us)
    }

    fn overlaps(&self, other: &Queued) -> bool {
        self.tx.at_us < other.end_us() && other.tx.at_us < self.end_us()
    }
}

/// A downlink refused, with what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub id: String,
    pub status: Status,
    pub airtime_us: u32,
}

/// The forwarder's downlink queue and duty-cycle budget.
#[derive(Debug, Default)]
pub struct TxSchedule {
    queue: Vec<Queued>,
    budget: DutyBudget<BUDGET_ENTRIES>,
}

/// Checks a request and computes its airtime and sub-band.
pub fn prepare(req: &DownlinkRequest) -> Result<Queued, Refusal> {
    let modulation = Modulation::lora(req.sf, req.bw_hz);
    let refuse = |airtime_us| Refusal {
        id: req.id.clone(),
        status: Status::Invalid,
        airtime_us,
    };
    if modulation.check().is_err() {
        return Err(refuse(0));
    }
    let Some(bytes) = decode_frame(&req.frame) else {
        return Err(refuse(0));
    };
    if bytes.is_empty() || bytes.len() > MAX_FRAME {
        return Err(refuse(0));
    }
    let airtime_us = modulation.airtime_us(bytes.len());
    let Some(band) = SubBand::of(req.freq_hz) else {
        return Err(refuse(airtime_us));
    };
    Ok(Queued {
        id: req.id.clone(),
        tx: TxRequest {
            at_us: req.tx_us,
            freq_hz: req.freq_hz,
            sf: req.sf,
            bw_hz: req.bw_hz,
            bytes,
            airtime_us,
        },
        band,
        priority: req.priority.into(),
    })
}

impl TxSchedule {
    /// An empty schedule with a fresh budget.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes `req` into the queue, or says why not. `Ok` carries the queued downlinks it
    /// displaced (an alarm over normal ones), each to be answered `busy`.
    pub fn offer(&mut self, req: &DownlinkRequest, now_us: u64) -> Result<Vec<Refusal>, Refusal> {
        let q = prepare(req)?;
        let refuse = |status| Refusal {
            id: q.id.clone(),
            status,
            airtime_us: q.tx.airtime_us,
        };
        if q.tx.at_us < now_us.saturating_add(MIN_LEAD_US) {
            return Err(refuse(Status::TooLate));
        }
        let overlapping: Vec<usize> = (0..self.queue.len())
            .filter(|&i| self.queue[i].overlaps(&q))
            .collect();
        let displaces = q.priority == Priority::Alarm
            && overlapping
                .iter()
                .all(|&i| self.queue[i].priority == Priority::Normal);
        if !overlapping.is_empty() && !displaces {
            return Err(refuse(Status::Busy));
        }
        // The budget with what is already queued in the band (not counting what this one
        // displaces).
        let queued_in_band: u64 = self
            .queue
            .iter()
            .enumerate()
            .filter(|(i, o)| o.band == q.band && !overlapping.contains(i))
            .map(|(_, o)| u64::from(o.tx.airtime_us))
            .sum();
        let wanted = u32::try_from(queued_in_band + u64::from(q.tx.airtime_us)).unwrap_or(u32::MAX);
        if !self
            .budget
            .can_send(q.tx.at_us / 1000, q.band, wanted, q.priority)
        {
            return Err(refuse(Status::DutyCycle));
        }
        let mut displaced = Vec::new();
        for i in overlapping.into_iter().rev() {
            let o = self.queue.remove(i);
            displaced.push(Refusal {
                id: o.id,
                status: Status::Busy,
                airtime_us: o.tx.airtime_us,
            });
        }
        self.queue.push(q);
        self.queue.sort_by_key(|o| o.tx.at_us);
        Ok(displaced)
    }

    /// When the next downlink should be handed to the radio (its `tx_us` minus
    /// [`DISPATCH_LEAD_US`]), if any is queued.
    pub fn next_dispatch_us(&self) -> Option<u64> {
        self.queue
            .first()
            .map(|q| q.tx.at_us.saturating_sub(DISPATCH_LEAD_US))
    }

    /// The earliest queued downlink if it is due for dispatch at `now_us`.
    pub fn take_due(&mut self, now_us: u64) -> Option<Queued> {
        if self.next_dispatch_us()? <= now_us {
            Some(self.queue.remove(0))
        } else {
            None
        }
    }

    /// The last check before transmitting `q` at `now_us`: not too late, and the budget
    /// records it (or refuses it).
    pub fn admit(&mut self, q: &Queued, now_us: u64) -> Result<(), Status> {
        if now_us > q.tx.at_us.saturating_add(LATE_TOLERANCE_US) {
            return Err(Status::TooLate);
        }
        let at_ms = q.tx.at_us.max(now_us) / 1000;
        if self
            .budget
            .try_send(at_ms, q.band, q.tx.airtime_us, q.priority)
        {
            Ok(())
        } else {
            Err(Status::DutyCycle)
        }
    }

    /// Airtime recorded in `band` within the hour up to `now_us`.
    pub fn used_us(&self, now_us: u64, band: SubBand) -> u64 {
        self.budget.used_us(now_us / 1000, band)
    }

    /// Downlinks waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{encode_frame, PriorityName};

    fn req(id: &str, tx_us: u64, priority: PriorityName, len: usize) -> DownlinkRequest {
        DownlinkRequest {
            frame: encode_frame(&vec![0xAB; len]),
            freq_hz: 868_100_000,
            sf: 12,
            bw_hz: 125_000,
            tx_us,
            priority,
            id: id.into(),
        }
    }

    #[test]
    fn too_late_invalid_and_dispatch_order() {
        let mut s = TxSchedule::new();
        let e = s.offer(&req("late", 1_010_000, PriorityName::Normal, 17), 1_000_000);
        assert_eq!(e.unwrap_err().status, Status::TooLate);
        let mut bad = req("bad", 5_000_000, PriorityName::Normal, 17);
        bad.freq_hz = 915_000_000;
        assert_eq!(s.offer(&bad, 0).unwrap_err().status, Status::Invalid);
        let mut bad = req("bad", 5_000_000, PriorityName::Normal, 17);
        bad.frame = "%%%".into();
        assert_eq!(s.offer(&bad, 0).unwrap_err().status, Status::Invalid);
        let mut bad = req("bad", 5_000_000, PriorityName::Normal, 17);
        bad.sf = 6;
        assert_eq!(s.offer(&bad, 0).unwrap_err().status, Status::Invalid);

        s.offer(&req("b", 20_000_000, PriorityName::Normal, 17), 0)
            .unwrap();
        s.offer(&req("a", 10_000_000, PriorityName::Normal, 17), 0)
            .unwrap();
        assert_eq!(s.next_dispatch_us(), Some(10_000_000 - DISPATCH_LEAD_US));
        assert!(s.take_due(9_000_000).is_none());
        let a = s.take_due(9_950_000).unwrap();
        assert_eq!(a.id, "a");
        assert_eq!(
            a.tx.airtime_us,
            Modulation::lora(12, 125_000).airtime_us(17)
        );
        assert_eq!(s.admit(&a, 9_950_000), Ok(()));
        let b = s.take_due(20_000_000).unwrap();
        // Dispatched far too late (the process stalled): refused at the last check.
        assert_eq!(
            s.admit(&b, 20_000_000 + LATE_TOLERANCE_US + 1),
            Err(Status::TooLate)
        );
        assert!(s.is_empty());
    }

    #[test]
    fn alarms_displace_overlapping_normal_downlinks() {
        let mut s = TxSchedule::new();
        s.offer(&req("n", 10_000_000, PriorityName::Normal, 17), 0)
            .unwrap();
        // Another normal one in the same slot: busy.
        let e = s.offer(&req("n2", 10_100_000, PriorityName::Normal, 17), 0);
        assert_eq!(e.unwrap_err().status, Status::Busy);
        // An alarm takes the slot; the normal one is answered busy.
        let displaced = s
            .offer(&req("a", 10_100_000, PriorityName::Alarm, 17), 0)
            .unwrap();
        assert_eq!(displaced.len(), 1);
        assert_eq!(
            (displaced[0].id.as_str(), displaced[0].status),
            ("n", Status::Busy)
        );
        // An alarm does not displace an alarm.
        let e = s.offer(&req("a2", 10_000_000, PriorityName::Alarm, 17), 0);
        assert_eq!(e.unwrap_err().status, Status::Busy);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn duty_cycle_keeps_a_reserve_for_alarms() {
        let mut s = TxSchedule::new();
        // SF12 frames of 17 bytes: about 1.15 s each; 1 % of an hour is 36 s, normal
        // traffic may use 80 % of it (28.8 s).
        let airtime = u64::from(Modulation::lora(12, 125_000).airtime_us(17));
        let band = SubBand::G868_0;
        let mut t = 10_000_000u64;
        let mut sent = 0u64;
        loop {
            let r = req(&format!("n{t}"), t, PriorityName::Normal, 17);
            match s.offer(&r, t - 1_000_000) {
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.status, Status::DutyCycle);
                    break;
                }
            }
            let q = s.take_due(t).unwrap();
            s.admit(&q, t).unwrap();
            sent += airtime;
            t += 5_000_000;
        }
        assert!(sent <= band.limit_us(Priority::Normal), "{sent}");
        assert!(sent + airtime > band.limit_us(Priority::Normal), "{sent}");
        assert_eq!(s.used_us(t, band), sent);
        // An alarm still goes.
        let r = req("alarm", t, PriorityName::Alarm, 17);
        s.offer(&r, t - 1_000_000).unwrap();
        let q = s.take_due(t).unwrap();
        assert_eq!(s.admit(&q, t), Ok(()));
        // Queued airtime counts: two alarms that together exceed the rest are not both
        // taken.
        let mut refused = false;
        for k in 1..20u64 {
            let at = t + k * 5_000_000;
            if let Err(e) = s.offer(&req(&format!("a{k}"), at, PriorityName::Alarm, 17), t) {
                assert_eq!(e.status, Status::DutyCycle);
                refused = true;
                break;
            }
        }
        assert!(refused);
        let queued: u64 = s.queue.iter().map(|q| u64::from(q.tx.airtime_us)).sum();
        assert!(s.used_us(t, band) + queued <= band.budget_us());
    }
}
