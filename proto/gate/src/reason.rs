//! [`Reason`]: the outcome of an access decision, one byte on the wire and in the hub's
//! access log.
//!
//! `Reason` has no `Unknown(n)` variant on purpose: a gate that receives an authenticated
//! decision with a code it does not know gets [`Error::UnknownReason`](crate::Error::UnknownReason) from
//! the parser and must treat it as a deny (fail closed), never as a missing answer (which
//! would fall back to its allow-list).

/// Why a card was refused, or that it was allowed. One byte on the wire; the hub's access
/// log stores the same code. Codes are stable: never renumber, only add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
#[repr(u8)]
pub enum Reason {
    /// Allowed.
    Granted = 0,
    /// Allowed by a master card (no schedule or level applies).
    GrantedMaster = 1,
    UnknownCard = 2,
    /// The card, or the person holding it, is disabled.
    Disabled = 3,
    NotYetValid = 4,
    Expired = 5,
    OutsideSchedule = 6,
    Holiday = 7,
    GateNotInLevel = 8,
    AntiPassback = 9,
    /// The gate is unknown or disabled at the hub.
    UnknownGate = 10,
    /// Decided by the gate from its allow-list while the hub was unreachable.
    OfflineGranted = 11,
    OfflineDenied = 12,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::Granted,
        Reason::GrantedMaster,
        Reason::UnknownCard,
        Reason::Disabled,
        Reason::NotYetValid,
        Reason::Expired,
        Reason::OutsideSchedule,
        Reason::Holiday,
        Reason::GateNotInLevel,
        Reason::AntiPassback,
        Reason::UnknownGate,
        Reason::OfflineGranted,
        Reason::OfflineDenied,
    ];

    pub fn from_code(code: u8) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| *r as u8 == code)
    }

    pub fn is_allowed(self) -> bool {
        matches!(
            self,
            Reason::Granted | Reason::GrantedMaster | Reason::OfflineGranted
        )
    }

    /// Stable snake_case name, for logs, JSON and the console.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Granted => "granted",
            Reason::GrantedMaster => "granted_master",
            Reason::UnknownCard => "unknown_card",
            Reason::Disabled => "disabled",
            Reason::NotYetValid => "not_yet_valid",
            Reason::Expired => "expired",
            Reason::OutsideSchedule => "outside_schedule",
            Reason::Holiday => "holiday",
            Reason::GateNotInLevel => "gate_not_in_level",
            Reason::AntiPassback => "anti_passback",
            Reason::UnknownGate => "unknown_gate",
            Reason::OfflineGranted => "offline_granted",
            Reason::OfflineDenied => "offline_denied",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_codes_round_trip_and_are_stable() {
        for r in Reason::ALL {
            assert_eq!(Reason::from_code(r as u8), Some(r));
        }
        assert_eq!(Reason::from_code(200), None);
        assert_eq!(Reason::AntiPassback as u8, 9);
    }
}
