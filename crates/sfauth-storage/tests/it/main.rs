//! sfauth-storage's integration tests, one binary (linked once): each file is a module.
//!
//! Every backend runs the one conformance suite (`sfauth_storage::conformance`): `memory`,
//! `file` and `sqlite` always, `redis` and `postgres` against the servers of
//! `SFAUTH_TEST_REDIS_URL` / `SFAUTH_TEST_POSTGRES_URL`; `compat` opens the committed v1
//! fixtures with today's code.

mod support;

mod compat;
mod file;
mod memory;
mod postgres;
mod redis;
mod sqlite;
