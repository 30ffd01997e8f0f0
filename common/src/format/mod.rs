//! One module per source kind: what its positions are, what a segment's payload holds,
//! where a restore may stop, and what its snapshot manifest adds. The generic modules
//! ([`crate::segment`], [`crate::snapshot`], [`crate::keys`]) know none of it.

pub mod mysql;
pub mod redis;
