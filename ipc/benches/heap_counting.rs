//! ns per allocate+free through `ipc::heap::Counting`, the services' allocator: compare with
//! `cargo bench -p ipc --bench heap_system`.

#[path = "heap/alloc_loop.rs"]
mod alloc_loop;

#[global_allocator]
static HEAP: ipc::heap::Counting = ipc::heap::Counting;

fn main() {
    alloc_loop::run("ipc::heap::Counting");
    assert!(
        ipc::heap::installed(),
        "the counting allocator counted nothing"
    );
}
