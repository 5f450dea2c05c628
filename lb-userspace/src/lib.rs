//! lbd and lbctl library.
