//! Runs every `lora_node_core::scenarios` case on a Cortex-M4 under QEMU and exits with
//! the semihosting status: success only if all passed. One line per scenario on the
//! host's stdout (semihosting), as `cargo test` prints them.
//!
//!     RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 /usr/bin/cargo run --release
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use cortex_m_semihosting::debug::{exit, EXIT_FAILURE, EXIT_SUCCESS};
use cortex_m_semihosting::hprintln;
use lora_node_core::scenarios::ALL;

#[entry]
fn main() -> ! {
    let mut failed = 0u32;
    for scenario in ALL {
        match (scenario.run)() {
            Ok(()) => hprintln!("test {} ... ok", scenario.name),
            Err(failure) => {
                failed += 1;
                hprintln!("test {} ... FAILED: {}", scenario.name, failure);
            }
        }
    }
    hprintln!(
        "qemu (cortex-m4): {} passed; {} failed",
        ALL.len() as u32 - failed,
        failed
    );
    exit(if failed == 0 {
        EXIT_SUCCESS
    } else {
        EXIT_FAILURE
    });
    loop {}
}

/// A panic is a failed run: report it and exit non-zero (QEMU's exit code).
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    hprintln!("qemu-tests panicked: {}", info);
    exit(EXIT_FAILURE);
    loop {}
}
