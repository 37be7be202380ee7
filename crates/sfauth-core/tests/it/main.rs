//! sfauth-core's integration tests, one binary (linked once): each file is a module.
//!
//! `flows`: every flow against canned answers through a closure transport, checking each exact
//! request; `properties`: property tests of the parsers and the token types.

mod flows;
mod properties;
