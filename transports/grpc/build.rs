//! Compiles `proto/tributary/v1/*.proto` with protox (pure Rust: no system protoc) and
//! generates the tonic server and client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/tributary/v1/event_stream.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
