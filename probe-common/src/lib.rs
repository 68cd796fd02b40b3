//! The kernel↔user contract of flagprobe, and nothing else.
//!
//! Everything both sides read lives here once: the TCP flags vocabulary ([`flags`]), the flow key and
//! per-flow counters with the pure function that updates them ([`flow`]), the per-hook counters
//! ([`counters`]) and the hooks' indices ([`hook`]), the ring-buffer event ([`event`]), map names and sizes ([`maps`]) and the header
//! parser both the kernel program and replay run ([`parse`]), and the flood-proof aggregates that
//! need no flow slot ([`aggregate`]), the home networks that give a mirror port's packets their
//! direction ([`home`]) and what the program does with a packet once counted ([`action`]). The types are
//! `#[repr(C)]` with explicit padding and size asserts so the eBPF program (bpfel) and the agent
//! (x86_64 or aarch64, both little-endian) read the same bytes. The update logic is plain Rust with no
//! allocation so the kernel program and offline replay run literally the same code.
#![no_std]

pub mod action;
pub mod aggregate;
pub mod counters;
pub mod event;
pub mod flags;
pub mod flow;
pub mod home;
pub mod hook;
pub mod maps;
pub mod parse;
