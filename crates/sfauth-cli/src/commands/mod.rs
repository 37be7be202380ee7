//! One module per command group.

pub(crate) mod api;
pub(crate) mod demo;
pub(crate) mod doctor;
pub(crate) mod login;
pub(crate) mod manage;
pub(crate) mod open;
pub(crate) mod sf_import;
pub(crate) mod status;
pub(crate) mod transfer;
