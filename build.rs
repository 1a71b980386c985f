//! Compiles `proto/geo/v1/*.proto` with a vendored `protoc`, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build reads PROTOC; a build script is single-threaded, so setting it is sound.
    std::env::set_var("PROTOC", protoc);
    let protos = [
        "proto/geo/v1/mode.proto",
        "proto/geo/v1/admin.proto",
        "proto/geo/v1/replication.proto",
        "proto/geo/v1/gate.proto",
        "proto/geo/v1/objects.proto",
        "proto/geo/v1/status.proto",
    ];
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("geo_descriptor.bin"))
        .compile_protos(&protos, &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
