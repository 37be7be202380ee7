//! One module per command group.

pub(crate) mod demo;
pub(crate) mod login;
pub(crate) mod manage;
pub(crate) mod status;
pub(crate) mod transfer;
