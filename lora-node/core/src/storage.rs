//! [`Storage`]: where the node keeps what must survive a reboot, and the two reservation
//! rules that make a reboot neither reuse an uplink counter nor accept a replayed downlink.
//!
//! # Uplink counter
//! The hub accepts an uplink only if its counter is higher than every counter it accepted
//! before (proto/lora, the replay rule). Writing the counter to flash on every frame would
//! wear the flash out, so the node *reserves* blocks of [`FCNT_SKIP`] counters: before it
//! uses a counter outside the block it last stored, it stores the new counter (the start
//! of the new block). Every counter used since the last store is therefore below
//! `stored + FCNT_SKIP`, and after a reboot the node resumes there. One flash write per
//! [`FCNT_SKIP`] frames; a reboot skips at most [`FCNT_SKIP`] counters.
//!
//! # Downlink counter
//! The node accepts a downlink only if its counter is above the last one it accepted. To
//! keep that true across a reboot without a flash write per downlink (the hub sends an ACK
//! for every alarm transmission), the node persists a *high-water mark*
//! ([`Stored::down_mark`]) reserved ahead the same way: every downlink counter it ever
//! accepted is at or below the stored mark; accepting a counter above it first stores
//! `counter + FCNT_DOWN_SKIP - 1`. One flash write per [`FCNT_DOWN_SKIP`] counters at most.
//!
//! After a reboot the node only knows the mark, not the exact last counter: the hub's
//! next counters (it counts up by one per downlink, `appliance/store` `fcnt_down`) may
//! lie between the last accepted one and the mark. Refusing them all would lock the hub
//! out for up to [`FCNT_DOWN_SKIP`] downlinks, and every refused ACK makes the node send
//! its alarm again. So a downlink at or below the mark is still accepted when it is
//! provably new: it acknowledges the uplink whose receive window it arrived in. Uplink
//! counters never repeat (above), so no frame made before this uplink can name it, and
//! the hub made it after everything recorded before the reboot: its counter is above all
//! of those. From then on the node knows the hub's counter exactly and the usual rule
//! (above the last accepted) applies. The node's exact rule is in [`crate::node`].

use core::fmt;

/// Counters reserved per store: the node writes its counter every `FCNT_SKIP` frames and
/// resumes at `stored + FCNT_SKIP` after a reboot.
pub const FCNT_SKIP: u32 = 32;

/// Downlink counters reserved per store: accepting a downlink counter above the stored
/// mark stores `counter + FCNT_DOWN_SKIP - 1`.
pub const FCNT_DOWN_SKIP: u32 = 32;

/// What the node persists: the start of its reserved uplink counter block, its boot count
/// and the high-water mark of the downlink counters it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stored {
    /// The first counter of the block reserved by the last store: every counter the node
    /// used is below `fcnt + FCNT_SKIP`.
    pub fcnt: u32,
    /// Boots since the node was provisioned (the first boot is 0), as its heartbeats say.
    pub reboots: u16,
    /// Every downlink counter the node accepted is at or below this (0: none yet, the
    /// hub's first downlink counter is 1). Records written before this field existed load
    /// with 0: such a node has never refused a replay across a reboot anyway.
    pub down_mark: u32,
}

/// The board's persistent memory for [`Stored`] (a flash page on the boards, a variable
/// in the simulator and tests).
pub trait Storage {
    /// What the last successful [`Storage::store`] wrote; `None` on a blank device.
    fn load(&mut self) -> Option<Stored>;
    /// Persists `value`. The node uses a new block of counters only after this returned
    /// `Ok`, so a failing store stops transmissions instead of risking a reused counter,
    /// and accepts a downlink above the stored mark only after it, so a failing store
    /// refuses that downlink instead of letting it be replayed after a reboot.
    fn store(&mut self, value: Stored) -> Result<(), StorageError>;
}

/// A store did not complete (flash erase/write failed or timed out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageError {
    /// The medium refused or failed the write.
    WriteFailed,
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageError::WriteFailed => f.write_str(
                "persisting the frame counters failed (check the flash): until a store succeeds the node sends no frame and accepts no downlink that needs a new reservation",
            ),
        }
    }
}

/// A [`Storage`] in RAM: for the host simulator and the tests (it survives a "reboot"
/// when the test moves it from the old node to the new one with [`Node::into_storage`]).
///
/// [`Node::into_storage`]: crate::Node::into_storage
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    pub value: Option<Stored>,
    /// Stores done (to check the flash-wear promise).
    pub writes: u32,
    /// When set, every store fails (a broken flash).
    pub fail: bool,
}

impl Storage for MemStorage {
    fn load(&mut self) -> Option<Stored> {
        self.value
    }

    fn store(&mut self, value: Stored) -> Result<(), StorageError> {
        if self.fail {
            return Err(StorageError::WriteFailed);
        }
        self.value = Some(value);
        self.writes += 1;
        Ok(())
    }
}

impl<S: Storage + ?Sized> Storage for &mut S {
    fn load(&mut self) -> Option<Stored> {
        (**self).load()
    }

    fn store(&mut self, value: Stored) -> Result<(), StorageError> {
        (**self).store(value)
    }
}
