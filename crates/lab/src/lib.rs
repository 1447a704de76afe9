//! vixen-lab (placeholder; filled in by its issue).
