//! vixen-pki (placeholder; filled in by its issue).
