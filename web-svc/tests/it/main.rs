//! Integration tests of `web-svc`: the real binary on loopback, real HTTP clients, an
//! in-test camera publishing through the real region and announce socket.

mod access;
mod api;
mod browser;
mod browser_review;
mod connections;
mod disk;
mod events;
mod harness;
mod health;
mod hub;
mod metrics;
mod page_weight;
mod review;
mod settings;
mod startup;
mod stream;
mod tune_browser;
