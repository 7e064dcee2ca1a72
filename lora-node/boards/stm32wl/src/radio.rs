//! The STM32WL's built-in SX126x for lora-phy: its "pins" are registers. NSS is
//! PWR_SUBGHZSPICR.NSS, BUSY is PWR_SR2.RFBUSYS, RESET is RCC_CSR.RFRST and DIO1 is the
//! SUBGHZ_RADIO interrupt (RM0453 sections 4.3 and 5.x). The same approach as lora-rs'
//! STM32WL example.
// Enabling an NVIC interrupt is `unsafe` in embassy (it may break critical sections that
// rely on it being masked); this module only enables SUBGHZ_RADIO, whose handler only
// masks itself again and signals.
#![allow(unsafe_code)]

use embassy_stm32::interrupt::{self, InterruptExt};
use embassy_stm32::pac;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::signal::Signal;
use embassy_time::Timer;
use embedded_hal::digital::OutputPin;
use embedded_hal_async::spi::{ErrorType, Operation, SpiBus, SpiDevice};
use lora_phy::mod_params::RadioError;
use lora_phy::mod_traits::InterfaceVariant;
use lora_phy::DelayNs;

static IRQ: Signal<CriticalSectionRawMutex, ()> = Signal::new();

/// SUBGHZ_RADIO: mask the line (the radio's IRQ stays raised until lora-phy clears it)
/// and wake the waiter.
pub struct InterruptHandler;

impl interrupt::typelevel::Handler<interrupt::typelevel::SUBGHZ_RADIO> for InterruptHandler {
    unsafe fn on_interrupt() {
        interrupt::SUBGHZ_RADIO.disable();
        IRQ.signal(());
    }
}

/// lora-phy's board hooks for the STM32WL radio with an RF switch on two GPIOs.
pub struct SubGhzVariant<P> {
    pub rf_rx: P,
    pub rf_tx: P,
}

impl<P: OutputPin> InterfaceVariant for SubGhzVariant<P> {
    async fn reset(&mut self, _delay: &mut impl DelayNs) -> Result<(), RadioError> {
        pac::RCC.csr().modify(|w| w.set_rfrst(true));
        pac::RCC.csr().modify(|w| w.set_rfrst(false));
        Ok(())
    }

    async fn wait_on_busy(&mut self) -> Result<(), RadioError> {
        while pac::PWR.sr2().read().rfbusys() {}
        Ok(())
    }

    async fn await_irq(&mut self) -> Result<(), RadioError> {
        // SAFETY: see the module comment; the handler is bound in board.rs.
        unsafe { interrupt::SUBGHZ_RADIO.enable() };
        IRQ.wait().await;
        Ok(())
    }

    async fn enable_rf_switch_rx(&mut self) -> Result<(), RadioError> {
        self.rf_tx.set_low().map_err(|_| RadioError::RfSwitchTx)?;
        self.rf_rx.set_high().map_err(|_| RadioError::RfSwitchRx)
    }

    async fn enable_rf_switch_tx(&mut self) -> Result<(), RadioError> {
        self.rf_rx.set_low().map_err(|_| RadioError::RfSwitchRx)?;
        self.rf_tx.set_high().map_err(|_| RadioError::RfSwitchTx)
    }

    async fn disable_rf_switch(&mut self) -> Result<(), RadioError> {
        self.rf_rx.set_low().map_err(|_| RadioError::RfSwitchRx)?;
        self.rf_tx.set_low().map_err(|_| RadioError::RfSwitchTx)
    }
}

/// The SUBGHZSPI bus as an `SpiDevice`: chip select is a PWR register bit.
pub struct SubGhzSpi<B>(pub B);

impl<B: SpiBus> ErrorType for SubGhzSpi<B> {
    type Error = B::Error;
}

impl<B: SpiBus> SpiDevice for SubGhzSpi<B> {
    async fn transaction(&mut self, ops: &mut [Operation<'_, u8>]) -> Result<(), Self::Error> {
        pac::PWR.subghzspicr().modify(|w| w.set_nss(false));
        let mut result = Ok(());
        for op in ops {
            result = match op {
                Operation::Read(buf) => self.0.read(buf).await,
                Operation::Write(buf) => self.0.write(buf).await,
                Operation::Transfer(r, w) => self.0.transfer(r, w).await,
                Operation::TransferInPlace(buf) => self.0.transfer_in_place(buf).await,
                Operation::DelayNs(ns) => match self.0.flush().await {
                    Ok(()) => {
                        Timer::after_nanos(u64::from(*ns)).await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                },
            };
            if result.is_err() {
                break;
            }
        }
        // Deselect also after a failure.
        let flushed = self.0.flush().await;
        pac::PWR.subghzspicr().modify(|w| w.set_nss(true));
        result.and(flushed)
    }
}
