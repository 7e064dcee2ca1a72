//! [`Now`]: the one clock argument every input takes.

/// The current time as the board knows it.
///
/// `ms` is monotonic (milliseconds since boot, never going back: every timer of the core
/// uses it); `unix` is wall-clock seconds (RTC or SNTP), used only as the `time` field of
/// the messages sent to the hub. A board without a set clock passes 0, which the hub
/// stores as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    pub ms: u64,
    pub unix: u32,
}

impl Now {
    pub const fn new(ms: u64, unix: u32) -> Now {
        Now { ms, unix }
    }
}
