//! The committed `src/mdm/schema/generated.rs` must be what the generator makes from Apple's
//! schema. Skipped where the schema checkout is not beside the repository.

use std::path::{Path, PathBuf};

fn apple_schema() -> Option<PathBuf> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .map(|dir| dir.join("shared/apple-device-management"))
        .find(|dir| dir.is_dir())
}

#[test]
fn committed_output_matches_the_schema() {
    let Some(schema) = apple_schema() else {
        eprintln!("skipped: Apple's device-management schema is not beside the repository");
        return;
    };
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../src/mdm/schema/generated.rs");
    let fresh = citadel_schema_gen::generate(&schema).unwrap();
    let temp = std::env::temp_dir().join(format!("citadel-generated-{}.rs", std::process::id()));
    std::fs::write(&temp, &fresh).unwrap();
    let committed = std::fs::read_to_string(&committed).unwrap();
    let same = committed == std::fs::read_to_string(&temp).unwrap();
    std::fs::remove_file(&temp).unwrap();
    assert!(
        same,
        "src/mdm/schema/generated.rs is stale; regenerate it with\n  cargo run --manifest-path \
         installer/schema-gen/Cargo.toml -- {} src/mdm/schema/generated.rs",
        schema.display()
    );
}
