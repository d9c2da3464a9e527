//! `citadel-schema-gen <schema-dir> <output-file>`: writes the MDM command tables and builders.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [schema_dir, output] = args.as_slice() else {
        eprintln!("usage: citadel-schema-gen <apple-device-management-dir> <output-file>");
        return ExitCode::from(64);
    };
    match citadel_schema_gen::generate(schema_dir.as_ref()) {
        Ok(code) => match std::fs::write(output, code) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("cannot write {output}: {error}");
                ExitCode::from(73)
            }
        },
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(65)
        }
    }
}
