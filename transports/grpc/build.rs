//! Compiles `proto/tributary/v1/*.proto` with protox (pure Rust: no system protoc) and
//! generates the tonic server and client.
//!
//! Two passes: the messages and the server, whose codec is `crate::codec::ServerCodec` (a
//! request that is not valid protobuf is bad input, `INVALID_ARGUMENT`), then the client alone
//! (into `client/`, over the messages of the first pass), with tonic's own prost codec (a
//! response that is not valid protobuf stays `INTERNAL`, as gRPC says for a client).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/tributary/v1/event_stream.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(false)
        .codec_path("crate::codec::ServerCodec")
        .bytes(".")
        .compile_fds(fds.clone())?;
    let client_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("client");
    std::fs::create_dir_all(&client_dir)?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .extern_path(".tributary.v1", "crate::pb")
        .bytes(".")
        .out_dir(&client_dir)
        .compile_fds(fds)?;
    Ok(())
}
