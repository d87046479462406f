//! Song interning: (artist, song) names to small ids, with eviction.
//!
//! Panes count songs by [`SongId`]; names come back only when a window's
//! top songs are exported. Each live pane that counts a song holds one
//! reference to it; when the last pane holding it is freed the name is
//! evicted and its id reused, so memory follows the live windows, not history.

use hashbrown::HashTable;

use crate::event::SongId;
use crate::song_counts::ENTRY_OVERHEAD_BYTES;

/// One allocation per song: the artist's bytes then the song's.
struct Entry {
    names: Box<str>,
    artist_len: usize,
    references: u32,
    hash: u64,
}

impl Entry {
    fn artist(&self) -> &str {
        &self.names[..self.artist_len]
    }

    fn song(&self) -> &str {
        &self.names[self.artist_len..]
    }
}

/// The interner. Ids are dense and reused after eviction.
#[derive(Default)]
pub struct SongCatalog {
    table: HashTable<u32>,
    entries: Vec<Option<Entry>>,
    free_ids: Vec<u32>,
    hasher: ahash::RandomState,
}

impl SongCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of (artist, song), adding it if new. A new entry holds no
    /// reference until a pane retains it.
    pub fn intern(&mut self, artist: &str, song: &str) -> SongId {
        let hash = self.hasher.hash_one((artist, song));
        self.intern_hashed(hash, artist, song)
    }

    /// The hasher [`SongCatalog::intern_hashed`] expects: decode threads
    /// clone it to hash names in parallel. Seeded per process.
    pub fn hasher(&self) -> &ahash::RandomState {
        &self.hasher
    }

    /// [`SongCatalog::intern`] with `hash = self.hasher().hash_one((artist, song))`
    /// computed by the caller.
    pub fn intern_hashed(&mut self, hash: u64, artist: &str, song: &str) -> SongId {
        debug_assert_eq!(hash, self.hasher.hash_one((artist, song)));
        let entries = &self.entries;
        let found = self.table.find(hash, |&id| {
            let entry = entries[id as usize]
                .as_ref()
                .expect("table holds live ids only");
            entry.artist() == artist && entry.song() == song
        });
        if let Some(&id) = found {
            return SongId(id);
        }
        let entry = Entry {
            names: [artist, song].concat().into_boxed_str(),
            artist_len: artist.len(),
            hash,
            references: 0,
        };
        let id = match self.free_ids.pop() {
            Some(id) => {
                self.entries[id as usize] = Some(entry);
                id
            }
            None => {
                self.entries.push(Some(entry));
                (self.entries.len() - 1) as u32
            }
        };
        let entries = &self.entries;
        self.table.insert_unique(hash, id, |&id| {
            entries[id as usize]
                .as_ref()
                .expect("table holds live ids only")
                .hash
        });
        SongId(id)
    }

    /// A pane started counting `id`.
    pub fn retain(&mut self, id: SongId) {
        if let Some(entry) = self.entries.get_mut(id.0 as usize).and_then(Option::as_mut) {
            entry.references += 1;
        }
    }

    /// A pane counting `id` was freed; evicts the name when no pane holds it.
    pub fn release(&mut self, id: SongId) {
        let Some(entry) = self.entries.get_mut(id.0 as usize).and_then(Option::as_mut) else {
            return;
        };
        entry.references = entry.references.saturating_sub(1);
        if entry.references == 0 {
            self.evict(id);
        }
    }

    /// Evict `id` if no pane holds it (it was interned for an event that was
    /// then refused).
    pub fn forget_if_unreferenced(&mut self, id: SongId) {
        if matches!(self.entries.get(id.0 as usize), Some(Some(e)) if e.references == 0) {
            self.evict(id);
        }
    }

    fn evict(&mut self, id: SongId) {
        let Some(entry) = self.entries[id.0 as usize].take() else {
            return;
        };
        if let Ok(slot) = self.table.find_entry(entry.hash, |&other| other == id.0) {
            slot.remove();
        }
        self.free_ids.push(id.0);
    }

    /// (artist, song) of a live id.
    pub fn names(&self, id: SongId) -> Option<(&str, &str)> {
        self.entries
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .map(|entry| (entry.artist(), entry.song()))
    }

    /// What a pane holding `id` is charged for it (0 for an id not held):
    /// the entry overhead plus the bytes of its names.
    pub fn charge_bytes(&self, id: SongId) -> usize {
        self.entries
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .map_or(0, |entry| ENTRY_OVERHEAD_BYTES + entry.names.len())
    }

    /// The name hash of a live id: stable for the process, whatever id the
    /// names get after an eviction.
    pub fn hash(&self, id: SongId) -> Option<u64> {
        self.entries
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .map(|entry| entry.hash)
    }

    /// Number of interned songs.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when nothing is interned.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_interning_matches_plain_interning() {
        let mut catalog = SongCatalog::new();
        let hasher = catalog.hasher().clone();
        let a = catalog.intern("A", "x");
        let hash = std::hash::BuildHasher::hash_one(&hasher, ("A", "x"));
        assert_eq!(catalog.intern_hashed(hash, "A", "x"), a);
    }

    #[test]
    fn same_names_same_id_and_eviction_reuses_ids() {
        let mut catalog = SongCatalog::new();
        let a = catalog.intern("A", "x");
        assert_eq!(catalog.intern("A", "x"), a);
        let b = catalog.intern("Ax", "");
        assert_ne!(a, b, "the pair is the key, not the concatenation");
        catalog.retain(a);
        catalog.retain(a);
        catalog.release(a);
        assert_eq!(catalog.names(a), Some(("A", "x")));
        catalog.release(a);
        assert_eq!(catalog.names(a), None);
        assert_eq!(catalog.len(), 1);
        let c = catalog.intern("C", "y");
        assert_eq!(c, a, "freed id is reused");
        assert_eq!(catalog.names(c), Some(("C", "y")));
        catalog.retain(c);
        catalog.forget_if_unreferenced(c);
        assert_eq!(catalog.len(), 2, "a retained name is kept");
        catalog.forget_if_unreferenced(b);
        assert_eq!(catalog.names(b), None);
        assert_eq!(catalog.len(), 1);
    }
}
