//! downbeat engine.
