//! Embeds the eBPF object that `cargo xtask build-ebpf` wrote, so `flagprobe` is one file. Without
//! it the binary still builds (for unit tests and clippy) and asks for `--ebpf-object` at run time.

use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let object = env::var_os("FLAGPROBE_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/bpfel-unknown-none/release/flagprobe-ebpf"));
    println!("cargo:rerun-if-env-changed=FLAGPROBE_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("flagprobe-ebpf.o");
    let bytes = fs::read(&object).unwrap_or_default();
    fs::write(out, bytes).unwrap();
}
