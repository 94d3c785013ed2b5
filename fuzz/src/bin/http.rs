//! AFL target: see `tributary_fuzz::http`.

fn main() {
    afl::fuzz!(|data: &[u8]| tributary_fuzz::http(data));
}
