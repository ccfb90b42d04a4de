//! Key rotation as edits of the model (placeholder, filled in below).

use thiserror::Error;

/// Placeholder.
#[derive(Debug)]
pub struct AddedKey;

/// Placeholder.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RotateError {}

/// Placeholder.
pub fn add_key() {}
/// Placeholder.
pub fn promote() {}
/// Placeholder.
pub fn prune() {}
