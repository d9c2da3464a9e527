//! Integration tests: the real `citadel` binary over real HTTPS, checked with independent
//! tools (openssl, Chromium) where one exists.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod audit;
mod browser;
mod certmonger;
mod directory;
mod fleet;
mod harness;
mod iam;
mod mdm;
mod portal;
mod push;
mod scep;
mod serve;
mod syslog;
#[path = "../common/webdriver.rs"]
mod webdriver;
