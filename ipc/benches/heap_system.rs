//! ns per allocate+free through the plain system allocator, the baseline of
//! `cargo bench -p ipc --bench heap_counting`.

#[path = "heap/alloc_loop.rs"]
mod alloc_loop;

fn main() {
    alloc_loop::run("std::alloc::System");
}
