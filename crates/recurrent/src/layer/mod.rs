//! One direction of one layer: parameters, packed layout, forward and backward through time.

pub(crate) mod direction;
pub(crate) mod fused;
mod grouped;
pub(crate) mod layout;
pub(crate) mod norm;
pub(crate) mod params;
mod record;
pub(crate) mod team;

pub use layout::{BatchOrder, SeqLayout};
pub use params::{DirectionParams, DirectionShape, LayerNormParams};
