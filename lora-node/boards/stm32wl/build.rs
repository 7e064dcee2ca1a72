//! memory.x for the linker and the provisioning constants (see ../build_support.rs).
include!("../build_support.rs");
