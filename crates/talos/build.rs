//! Generates the Talos API subset (client and server) from `proto/` with the system `protoc`
//! (Debian `protobuf-compiler`, well-known types from `libprotobuf-dev`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/machine/machine.proto",
        "proto/machine/lifecycle.proto",
        "proto/machine/image.proto",
        "proto/storage/storage.proto",
        "proto/cosi/state.proto",
        "proto/resource/config.proto",
    ];
    for p in protos.iter().chain(&["proto/common/common.proto"]) {
        println!("cargo:rerun-if-changed={p}");
    }
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
