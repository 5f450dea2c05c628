//! Empty host-side library so lb-userspace can name this crate as a build dependency (aya-template layout).
#![no_std]
