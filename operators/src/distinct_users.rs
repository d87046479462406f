//! Distinct users: exact for small sets, a HyperLogLog sketch beyond.
//!
//! Up to [`EXACT_LIMIT`] users a pane keeps their 64-bit hashes in a set, so
//! small windows are counted exactly. Beyond that it switches to the
//! `cardinality-estimator` HyperLogLog (LogLog-Beta estimator) with 2^16
//! six-bit registers: 48 KiB, standard error 1.04/sqrt(2^16) = 0.41%, so the
//! 2% bound is about five standard errors. Sketches merge register-wise, which
//! is how sliding windows combine their panes.

use cardinality_estimator::CardinalityEstimator;
use hashbrown::HashSet;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

/// Users counted exactly before switching to the sketch.
pub const EXACT_LIMIT: usize = 2048;

/// Register-index bits of the sketch (2^16 registers).
const PRECISION: usize = 16;
/// Bits per register.
const REGISTER_WIDTH: usize = 6;

type Sketch = CardinalityEstimator<u64, wyhash::WyHash, PRECISION, REGISTER_WIDTH>;

/// The stable 64-bit hash of a user id (its bytes as given by the source).
///
/// Stable across runs and machines (XXH3), so sketches and checkpoints from
/// different replicas agree.
pub fn user_hash(user_id: &[u8]) -> u64 {
    xxh3_64(user_id)
}

/// What a partial window carries of its users: the hashes while exact,
/// else the sketch (the `cardinality-estimator` serde form, which checks
/// its representation when read).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum UsersState {
    /// Sorted user hashes.
    Exact(Vec<u64>),
    /// The HyperLogLog sketch.
    Sketch(Box<Sketch>),
}

/// Distinct-user counter for one pane or window.
#[derive(Clone)]
pub enum DistinctUsers {
    /// Hashes of every user seen, while there are few.
    Exact(HashSet<u64>),
    /// The HyperLogLog sketch, once there are many.
    Sketch(Box<Sketch>),
}

impl Default for DistinctUsers {
    fn default() -> Self {
        DistinctUsers::Exact(HashSet::new())
    }
}

impl std::fmt::Debug for DistinctUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DistinctUsers::Exact(set) => write!(f, "Exact({})", set.len()),
            DistinctUsers::Sketch(sketch) => write!(f, "Sketch(~{})", sketch.estimate()),
        }
    }
}

impl DistinctUsers {
    /// Count one user by its [`user_hash`].
    #[inline]
    pub fn insert(&mut self, hash: u64) {
        match self {
            DistinctUsers::Exact(set) => {
                set.insert(hash);
                if set.len() > EXACT_LIMIT {
                    self.promote();
                }
            }
            DistinctUsers::Sketch(sketch) => sketch.insert_hash(hash),
        }
    }

    fn promote(&mut self) {
        if let DistinctUsers::Exact(set) = self {
            let mut sketch = Box::new(Sketch::new());
            for &hash in set.iter() {
                sketch.insert_hash(hash);
            }
            *self = DistinctUsers::Sketch(sketch);
        }
    }

    /// Add every user of `other` (set union).
    pub fn merge(&mut self, other: &DistinctUsers) {
        match other {
            DistinctUsers::Exact(theirs) => {
                for &hash in theirs {
                    self.insert(hash);
                }
            }
            DistinctUsers::Sketch(theirs) => {
                self.promote();
                if let DistinctUsers::Sketch(ours) = self {
                    ours.merge(theirs);
                }
            }
        }
    }

    /// The number of distinct users: exact up to [`EXACT_LIMIT`], estimated beyond.
    pub fn count(&self) -> u64 {
        match self {
            DistinctUsers::Exact(set) => set.len() as u64,
            DistinctUsers::Sketch(sketch) => sketch.estimate() as u64,
        }
    }

    /// The users, for another process to merge.
    pub fn to_state(&self) -> UsersState {
        match self {
            DistinctUsers::Exact(set) => {
                let mut hashes: Vec<u64> = set.iter().copied().collect();
                hashes.sort_unstable();
                UsersState::Exact(hashes)
            }
            DistinctUsers::Sketch(sketch) => UsersState::Sketch(sketch.clone()),
        }
    }

    /// The users of [`DistinctUsers::to_state`]; None for an exact set
    /// larger than [`EXACT_LIMIT`].
    pub fn from_state(state: &UsersState) -> Option<Self> {
        match state {
            UsersState::Exact(hashes) if hashes.len() <= EXACT_LIMIT => {
                Some(DistinctUsers::Exact(hashes.iter().copied().collect()))
            }
            UsersState::Exact(_) => None,
            UsersState::Sketch(sketch) => Some(DistinctUsers::Sketch(sketch.clone())),
        }
    }

    /// Approximate heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        match self {
            DistinctUsers::Exact(set) => set.capacity() * (std::mem::size_of::<u64>() + 1),
            DistinctUsers::Sketch(sketch) => sketch.size_of(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(range: std::ops::Range<u64>) -> DistinctUsers {
        let mut users = DistinctUsers::default();
        for id in range {
            users.insert(user_hash(id.to_string().as_bytes()));
        }
        users
    }

    #[test]
    fn small_sets_are_exact_and_duplicates_ignored() {
        let mut users = counted(0..EXACT_LIMIT as u64);
        users.insert(user_hash(b"0"));
        assert_eq!(users.count(), EXACT_LIMIT as u64);
        assert!(matches!(users, DistinctUsers::Exact(_)));
    }

    #[test]
    fn large_sets_switch_to_the_sketch_within_two_percent() {
        for n in [5_000u64, 100_000] {
            let users = counted(0..n);
            assert!(matches!(users, DistinctUsers::Sketch(_)));
            let error = (users.count() as f64 - n as f64).abs() / n as f64;
            assert!(
                error < 0.02,
                "n={n} estimate={} error={error}",
                users.count()
            );
            assert!(
                users.heap_bytes() < 64 * 1024,
                "{} bytes",
                users.heap_bytes()
            );
        }
    }

    #[test]
    fn merge_is_set_union_across_representations() {
        let mut a = counted(0..1_000);
        let b = counted(500..1_500);
        a.merge(&b);
        assert_eq!(a.count(), 1_500, "exact ∪ exact stays exact");
        let mut big = counted(0..50_000);
        big.merge(&counted(25_000..75_000));
        let error = (big.count() as f64 - 75_000.0).abs() / 75_000.0;
        assert!(error < 0.02, "estimate {}", big.count());
        let mut small = counted(0..10);
        small.merge(&counted(0..50_000));
        let error = (small.count() as f64 - 50_000.0).abs() / 50_000.0;
        assert!(error < 0.02, "estimate {}", small.count());
    }
}
