//! The test kit's own tests (`socache_shm_engine::testkit`): what the other
//! tests, the examples, engine-bench and the fuzzer take for granted.

use std::sync::atomic::Ordering;

use socache_shm_engine::testkit::{expired, value_for, Model, Rng, SharedPage};
use socache_shm_engine::Timestamp;

#[test]
fn rng_is_splitmix64() {
    // The reference sequence of SplitMix64 from seed 0.
    let mut r = Rng::new(0);
    assert_eq!(r.next(), 0xE220_A839_7B1D_CDAF);
    assert_eq!(r.next(), 0x6E78_9E6A_A1B9_65F4);
    let mut r = Rng::new(7);
    assert!((0..1000).all(|_| r.below(10) < 10 && r.pick(10) < 10));
    assert!((0..1000).all(|_| (0.0..1.0).contains(&r.unit())));
}

#[test]
fn values_are_unique_per_sequence_number() {
    assert_eq!(value_for(5, 40), value_for(5, 40));
    assert_ne!(value_for(5, 40), value_for(6, 40));
    assert_eq!(value_for(5, 3).len(), 3);
    assert_eq!(&value_for(9, 16)[..8], &9u64.to_le_bytes());
}

#[test]
fn the_model_follows_the_engines_expiry_rule() {
    let now = Timestamp(1_700_000_000_500_000);
    // Whole seconds: an expiry within the current second has come.
    assert!(expired(Timestamp(1_700_000_000_900_000), now));
    assert!(!expired(Timestamp(1_700_000_001_000_000), now));
    let mut m = Model::default();
    m.store(b"a", b"1".to_vec(), Timestamp(now.0 + 2_000_000), now);
    m.store(b"b", b"2".to_vec(), Timestamp(now.0 - 1), now);
    assert_eq!(m.len(), 1, "an already expired store is not held");
    assert_eq!(m.live(b"a", now).map(|e| &e.value[..]), Some(&b"1"[..]));
    let later = Timestamp(now.0 + 2_000_000);
    assert!(m.live(b"a", later).is_none());
    assert_eq!(m.len(), 1, "an expired entry stays until looked up");
    m.looked_up(b"a", later);
    assert!(m.is_empty());
}

#[test]
#[cfg_attr(miri, ignore = "fork")]
fn a_shared_page_is_seen_by_a_forked_child() {
    let page = SharedPage::new();
    // SAFETY: the child only stores to the page and exits at once.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        page.word(SharedPage::WORDS - 1).store(42, Ordering::SeqCst);
        // SAFETY: leave the child without running the parent's test harness.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &raw mut status, 0) }, pid);
    assert_eq!(page.word(SharedPage::WORDS - 1).load(Ordering::SeqCst), 42);
    assert_eq!(page.word(0).load(Ordering::SeqCst), 0);
}
