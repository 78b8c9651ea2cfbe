//! Tools that answer the questions asked while training: which learning rate
//! ([`lr_find`]), how much capacity ([`sweep`]), would k-fold validation tell
//! a different story ([`cv`]), are units dying or gradients vanishing
//! ([`diagnostics`]), and the plots that show the answers ([`plot`]).
//!
//! Everything here is written against [`Backend`](crate::backend::Backend),
//! so it runs on every device the fit loop runs on.

pub mod cv;
pub mod diagnostics;
pub mod lr_find;
pub mod plot;
pub mod sweep;
