//! One direction of one layer: parameters, packed layout, forward and backward through time.

pub mod direction;
pub mod fused;
pub mod layout;
pub mod norm;
pub mod params;
pub mod team;

pub use layout::{BatchOrder, SeqLayout};
pub use params::{DirectionParams, DirectionShape, LayerNormParams};
