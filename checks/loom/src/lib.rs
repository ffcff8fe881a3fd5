//! The model lives in `tests/seqlock.rs`.
