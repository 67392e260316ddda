//! Helpers for whole-system tests: find the built binaries, give each test its own runtime
//! directory, and stop every child on drop.
