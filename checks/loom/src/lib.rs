//! The model lives in `tests/seqlock.rs`. This library is the seam: the
//! engine's own sequence-word code (`engine/src/seqlock.rs`), compiled
//! here with `cfg(loom)` (see `build.rs`) so that it runs on loom's atomics.
//! The model calls these functions; it does not copy them.

#[path = "../../../engine/src/seqlock.rs"]
pub mod seqlock;
