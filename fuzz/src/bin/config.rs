//! AFL target: see `tributary_fuzz::config`.

fn main() {
    afl::fuzz!(|data: &[u8]| tributary_fuzz::config(data));
}
