//! vixen-sops (placeholder; filled in by its issue).
