//! A local emulator of Salesforce's OAuth 2.0 endpoints.
//!
//! It depends on no sfauth crate on purpose: it is written from the protocol reference, so it
//! catches the client's mistakes instead of sharing them.
