//! AFL target: see `tributary_fuzz::schema`.

fn main() {
    afl::fuzz!(|data: &[u8]| tributary_fuzz::schema(data));
}
