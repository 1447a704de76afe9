//! vixen-talos (placeholder; filled in by its issue).
