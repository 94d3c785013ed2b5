//! AFL target: see `tributary_fuzz::journal`.

fn main() {
    afl::fuzz!(|data: &[u8]| tributary_fuzz::journal(data));
}
