//! Settings shared by the property tests (`tests/fuzz_*.rs`).

use proptest::prelude::ProptestConfig;

/// Cases per property: `PROPTEST_CASES` when set (scripts/fuzz.sh), else `default` (a quick
/// debug-build run).
pub fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(default);
    // Failures are kept as named regression tests, not in files next to the sources; filters
    // may reject a share of every run's inputs, however long it is.
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_global_rejects: cases.saturating_mul(10).max(1024),
        ..ProptestConfig::default()
    }
}
