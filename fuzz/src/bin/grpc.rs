//! AFL target: see `tributary_fuzz::grpc`.

fn main() {
    afl::fuzz!(|data: &[u8]| tributary_fuzz::grpc(data));
}
