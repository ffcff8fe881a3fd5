//! The engine's `seqlock.rs` is compiled into this crate with `cfg(loom)`
//! set (for this crate only, not for loom or its dependencies), so its
//! atomics are loom's.
fn main() {
    println!("cargo::rustc-check-cfg=cfg(loom)");
    println!("cargo::rustc-cfg=loom");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=../../engine/src/seqlock.rs");
}
