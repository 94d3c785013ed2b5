//! AFL target: see `tributary_fuzz::sql_row`.

fn main() {
    afl::fuzz!(|data: &[u8]| tributary_fuzz::sql_row(data));
}
