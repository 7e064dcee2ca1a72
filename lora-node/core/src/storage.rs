//! [`Storage`]: where the node keeps what must survive a reboot, and the skip-ahead rule
//! that makes a reboot never reuse a frame counter.
//!
//! The hub accepts an uplink only if its counter is higher than every counter it accepted
//! before (proto/lora, the replay rule). Writing the counter to flash on every frame would
//! wear the flash out, so the node *reserves* blocks of [`FCNT_SKIP`] counters: before it
//! uses a counter outside the block it last stored, it stores the new counter (the start
//! of the new block). Every counter used since the last store is therefore below
//! `stored + FCNT_SKIP`, and after a reboot the node resumes there. One flash write per
//! [`FCNT_SKIP`] frames; a reboot skips at most [`FCNT_SKIP`] counters.

use core::fmt;

/// Counters reserved per store: the node writes its counter every `FCNT_SKIP` frames and
/// resumes at `stored + FCNT_SKIP` after a reboot.
pub const FCNT_SKIP: u32 = 32;

/// What the node persists: the start of its reserved counter block and its boot count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The first counter of the block reserved by the last store: every counter the node
    /// used is below `fcnt + FCNT_SKIP`.
    pub fcnt: u32,
    /// Boots since the node was provisioned (the first boot is 0), as its heartbeats say.
    pub reboots: u16,
}

/// The board's persistent memory for [`Stored`] (a flash page on the boards, a variable
/// in the simulator and tests).
pub trait Storage {
    /// What the last successful [`Storage::store`] wrote; `None` on a blank device.
    fn load(&mut self) -> Option<Stored>;
    /// Persists `value`. The node uses a new block of counters only after this returned
    /// `Ok`, so a failing store stops transmissions instead of risking a reused counter.
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
                "persisting the frame counter failed: the node sends nothing until a store succeeds (check the flash)",
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
