//! The README's embedding example (`examples/embedded_async_std.rs`) runs and sees its events.

#[allow(dead_code)]
#[path = "../examples/embedded_async_std.rs"]
mod embedded;

#[test]
fn the_embedding_example_publishes_and_consumes_on_async_std() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let seen = async_std::task::block_on(embedded::run(dir.path())).expect("the example runs");
    assert_eq!(
        seen,
        [
            "0 order.placed apples",
            "1 order.placed pears",
            "2 order.placed plums"
        ]
    );
}
