# U-Boot boot script for Gatehouse on the qemu aarch64 virt: RAUC's A/B selection
# (bootloader = uboot). Slots: A on virtio 0:2, B on virtio 0:3; each root file system holds
# its kernel (/boot/Image). BOOT_ORDER lists the slots to try; BOOT_<slot>_LEFT counts
# the tries left, decremented here and reset by `rauc status mark-good`
# (gatehouse-mark-good.service once the services run). A slot without tries is skipped,
# which rolls back to the other. The environment lives in uboot.env on the boot partition
# (U-Boot built with CONFIG_ENV_IS_IN_FAT on virtio 0:1; `virtio scan` runs first).
# Built into boot.scr by post-image.sh: mkimage -A arm64 -T script -C none.

virtio scan
test -n "${BOOT_ORDER}" || setenv BOOT_ORDER "A B"
test -n "${BOOT_A_LEFT}" || setenv BOOT_A_LEFT 3
test -n "${BOOT_B_LEFT}" || setenv BOOT_B_LEFT 3

setenv bootpart
setenv raucslot
for BOOT_SLOT in "${BOOT_ORDER}"; do
  if test "x${bootpart}" != "x"; then
    # a slot was chosen already
  elif test "x${BOOT_SLOT}" = "xA"; then
    if test ${BOOT_A_LEFT} -gt 0; then
      setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1
      echo "Gatehouse: slot A, ${BOOT_A_LEFT} tries left"
      setenv bootpart 2
      setenv raucslot A
    fi
  elif test "x${BOOT_SLOT}" = "xB"; then
    if test ${BOOT_B_LEFT} -gt 0; then
      setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1
      echo "Gatehouse: slot B, ${BOOT_B_LEFT} tries left"
      setenv bootpart 3
      setenv raucslot B
    fi
  fi
done

if test -n "${bootpart}"; then
  saveenv
else
  echo "Gatehouse: no slot has tries left; resetting both to 3"
  setenv BOOT_A_LEFT 3
  setenv BOOT_B_LEFT 3
  saveenv
  reset
fi

setenv bootargs "console=ttyAMA0 root=/dev/vda${bootpart} rootfstype=ext4 rootwait ro rauc.slot=${raucslot}"
load virtio 0:${bootpart} ${kernel_addr_r} /boot/Image
booti ${kernel_addr_r} - ${fdtcontroladdr}
