//! The `sfauth` command-line tool.
//!
//! It gives a person at a terminal `sfauth login`, `sfauth token` and friends on top of the
//! `sfauth` facade. The commands and the `sfauth` binary arrive with the CLI issue.
