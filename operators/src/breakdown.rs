//! Stream counts by level, device, US state and gender.

use std::collections::BTreeMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::dimensions::{Device, Dimensions, Gender, Level, UsState};

/// Counts of streams per value of each dimension.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breakdown {
    level: [u64; Level::ALL.len()],
    device: [u64; Device::ALL.len()],
    state: [u64; UsState::COUNT],
    gender: [u64; Gender::ALL.len()],
}

impl Default for Breakdown {
    fn default() -> Self {
        Self {
            level: [0; Level::ALL.len()],
            device: [0; Device::ALL.len()],
            state: [0; UsState::COUNT],
            gender: [0; Gender::ALL.len()],
        }
    }
}

impl Breakdown {
    /// Count one stream.
    #[inline]
    pub fn add(&mut self, dims: Dimensions) {
        self.level[dims.level as usize] += 1;
        self.device[dims.device as usize] += 1;
        self.state[dims.state.index()] += 1;
        self.gender[dims.gender as usize] += 1;
    }

    /// Add all counts of `other`.
    pub fn merge(&mut self, other: &Breakdown) {
        fn add_all(ours: &mut [u64], theirs: &[u64]) {
            ours.iter_mut().zip(theirs).for_each(|(a, b)| *a += b);
        }
        add_all(&mut self.level, &other.level);
        add_all(&mut self.device, &other.device);
        add_all(&mut self.state, &other.state);
        add_all(&mut self.gender, &other.gender);
    }

    /// Streams per level label, every label included.
    pub fn by_level(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Level::ALL
            .iter()
            .map(|l| (l.label(), self.level[*l as usize]))
    }

    /// Streams per device label, every label included.
    pub fn by_device(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Device::ALL
            .iter()
            .map(|d| (d.label(), self.device[*d as usize]))
    }

    /// Streams per state code (`"unknown"` last), every label included.
    pub fn by_state(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        (0..UsState::COUNT).map(|i| (UsState::from_index(i).label(), self.state[i]))
    }

    /// Streams per gender label, every label included.
    pub fn by_gender(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Gender::ALL
            .iter()
            .map(|g| (g.label(), self.gender[*g as usize]))
    }
}

/// Every count of a [`Breakdown`], in its dimensions' fixed orders: what a
/// partial window carries to be merged elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakdownState {
    level: Vec<u64>,
    device: Vec<u64>,
    state: Vec<u64>,
    gender: Vec<u64>,
}

impl Breakdown {
    /// The counts, for another process to merge.
    pub fn to_state(&self) -> BreakdownState {
        BreakdownState {
            level: self.level.to_vec(),
            device: self.device.to_vec(),
            state: self.state.to_vec(),
            gender: self.gender.to_vec(),
        }
    }

    /// Counts from [`Breakdown::to_state`]; None when a dimension has the
    /// wrong number of values.
    pub fn from_state(state: &BreakdownState) -> Option<Self> {
        Some(Self {
            level: state.level.as_slice().try_into().ok()?,
            device: state.device.as_slice().try_into().ok()?,
            state: state.state.as_slice().try_into().ok()?,
            gender: state.gender.as_slice().try_into().ok()?,
        })
    }
}

fn nonzero<'a>(counts: impl Iterator<Item = (&'a str, u64)>) -> BTreeMap<&'a str, u64> {
    counts.filter(|(_, n)| *n > 0).collect()
}

/// Serialized as `{"level": {...}, "device": {...}, "state": {...}, "gender": {...}}`
/// with only the values that occurred.
impl Serialize for Breakdown {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("level", &nonzero(self.by_level()))?;
        map.serialize_entry("device", &nonzero(self.by_device()))?;
        map.serialize_entry("state", &nonzero(self.by_state()))?;
        map.serialize_entry("gender", &nonzero(self.by_gender()))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_merges_every_dimension() {
        let dims = Dimensions {
            level: Level::Paid,
            device: Device::Mac,
            state: UsState::from_code("CA"),
            gender: Gender::Female,
        };
        let mut a = Breakdown::default();
        a.add(dims);
        a.add(Dimensions::default());
        let mut b = Breakdown::default();
        b.add(dims);
        b.merge(&a);
        let json = serde_json::to_value(&b).unwrap();
        assert_eq!(json["level"]["paid"], 2);
        assert_eq!(json["level"]["unknown"], 1);
        assert_eq!(json["device"]["mac"], 2);
        assert_eq!(json["state"]["CA"], 2);
        assert_eq!(json["gender"]["F"], 2);
        assert!(
            json["level"].get("free").is_none(),
            "zero counts are left out"
        );
    }
}
