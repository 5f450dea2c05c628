//! Shared helpers for the end-to-end tests: namespaces, processes, clients.
