//! Booting images in QEMU: firmware, accelerator, serial console.

pub mod accel;
pub mod direct;
pub mod firmware;
pub mod refresh;
pub mod secure_boot;
pub mod serial;
pub mod state;
pub mod usb;
