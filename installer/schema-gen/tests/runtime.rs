//! Compiles the appliance's schema runtime (`src/mdm/schema/mod.rs` and the generated tables
//! beside it) on its own, so its unit tests run here without building the whole appliance.

#[allow(dead_code)]
#[path = "../../../src/mdm/schema/mod.rs"]
mod schema;
