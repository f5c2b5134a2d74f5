//! Interop with other tools' model descriptions.
pub mod openmythos;
